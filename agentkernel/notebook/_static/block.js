// One block of a live agent turn (agentkernel.notebook._widget.BlockWidget).
//
// While `html` is empty the block streams: the kernel sends {append: "..."} custom messages and
// each view appends the text, so a long block never travels twice. Every view says
// {rendered: true} when drawn (the kernel learns a widget front end is there); for a streaming
// block the kernel answers {reset: "<everything so far>"}, covering appends sent before the view
// existed. Once `html` is set the block is frozen and drawn from it (server-rendered, escaped).

function render({ model, el }) {
  el.classList.add("agentkernel-block");
  let streamed = "";
  let sink = null;

  function draw() {
    const frozen = model.get("html");
    el.replaceChildren();
    sink = null;
    if (frozen) {
      const div = document.createElement("div");
      div.innerHTML = frozen;
      el.append(div);
      return;
    }
    sink = document.createElement("div");
    sink.className = "agentkernel-stream";
    sink.textContent = streamed;
    if (model.get("kind") === "thinking") {
      const details = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "✻ Thinking…";
      sink.classList.add("agentkernel-thinking");
      details.append(summary, sink);
      el.append(details);
    } else {
      el.append(sink);
    }
  }

  function onMessage(msg) {
    if (typeof msg.reset === "string") {
      streamed = msg.reset;
      if (sink) sink.textContent = streamed;
    }
    if (typeof msg.append === "string") {
      streamed += msg.append;
      if (sink) sink.append(msg.append);
    }
  }

  model.on("msg:custom", onMessage);
  model.on("change:html", draw);
  draw();
  model.send({ rendered: true });
  return () => {
    model.off("msg:custom", onMessage);
    model.off("change:html", draw);
  };
}

export default { render };
