// A one-line text box (agentkernel.notebook._widget.TextBox) whose every edit reaches the
// kernel at once: sent as a custom message, which the front end never holds back, unlike a
// state update (held until the kernel reports idle, which it does not while a cell runs).

function render({ model, el }) {
  const input = document.createElement("input");
  input.type = "text";
  input.className = "agentkernel-input";
  input.placeholder = model.get("placeholder");
  input.value = model.get("value");
  input.disabled = model.get("disabled");
  const sync = () => model.send({ value: input.value });
  const disabled = () => {
    input.disabled = model.get("disabled");
  };
  input.addEventListener("input", sync);
  // Keys typed here belong to the box, not to the notebook's shortcuts.
  input.addEventListener("keydown", (event) => event.stopPropagation());
  model.on("change:disabled", disabled);
  el.classList.add("agentkernel-textbox");
  el.dataset.lmSuppressShortcuts = "true";
  el.append(input);
  return () => {
    input.removeEventListener("input", sync);
    model.off("change:disabled", disabled);
  };
}

export default { render };
