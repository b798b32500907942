// One block of a live agent turn (agentkernel.notebook._widget.BlockWidget).
//
// While `html` is empty the block streams: the kernel sends {append: "..."} custom messages and
// each view appends the text, so a long block never travels twice. Every view says
// {rendered: true} when drawn (the kernel learns a widget front end is there); for a streaming
// block the kernel answers {reset: "<everything so far>"}, covering appends sent before the view
// existed. Until that reset a view shows no appends (it would show text without its start).
// Once `html` is set the block is frozen and drawn from it (server-rendered, escaped).
//
// The status block carries `turn` ({box, cell, text}): the model id of the turn's live output
// and the id of the cell running it. Only the page that ran the cell gets the kernel's
// display updates, so every other page showing the notebook (reloaded, or opened while the
// turn ran) looks after its own copy of the cell here:
// - a page whose cell lacks the live output (reloaded before the notebook was saved) puts it
//   back, so the approval waiting in it can be answered;
// - when the turn ends ({final: output}), a page whose cell still holds the live output
//   replaces it with the static output, so what that page saves holds no widget.
// Both go through the notebook model of JupyterLab's widget manager; where there is none
// (another front end), nothing is done.

const WIDGET_VIEW = "application/vnd.jupyter.widget-view+json";
const RESTORE_CHECK_MS = 1000;

function notebookCells(model) {
  try {
    const cells = model.widget_manager?._context?.model?.cells;
    if (!cells) return [];
    const found = [];
    for (let i = 0; i < cells.length; i++) found.push(cells.get(i));
    return found;
  } catch {
    return [];
  }
}

function liveOutputs(cell, box) {
  const outputs = cell.outputs;
  const found = [];
  if (!outputs) return found;
  for (let i = 0; i < outputs.length; i++) {
    const view = outputs.get(i).data?.[WIDGET_VIEW];
    if (view && view.model_id === box) found.push(i);
  }
  return found;
}

function initialize({ model }) {
  const turn = model.get("turn");
  if (!turn || !turn.box) return;
  let over = false;

  function restore() {
    if (over) return;
    const cells = notebookCells(model);
    if (cells.some((cell) => liveOutputs(cell, turn.box).length)) return;
    const cell = cells.find((c) => c.id === turn.cell && c.type === "code");
    if (!cell) return;
    cell.outputs.add({
      output_type: "display_data",
      data: {
        [WIDGET_VIEW]: { version_major: 2, version_minor: 0, model_id: turn.box },
        "text/plain": turn.text || "",
      },
      metadata: {},
    });
  }

  function onMessage(msg) {
    if (!msg.final) return;
    over = true;
    for (const cell of notebookCells(model)) {
      const indices = liveOutputs(cell, turn.box);
      for (const i of indices) cell.outputs.set(i, msg.final);
      if (indices.length && cell.executionCount == null && msg.execution_count != null) {
        cell.executionCount = msg.execution_count;
      }
    }
  }

  model.on("msg:custom", onMessage);
  // The page that runs the cell shows the output a moment after this model exists.
  const timer = setTimeout(restore, RESTORE_CHECK_MS);
  return () => {
    over = true;
    clearTimeout(timer);
    model.off("msg:custom", onMessage);
  };
}

function render({ model, el }) {
  el.classList.add("agentkernel-block");
  let streamed = "";
  let synced = false; // the kernel's reset arrived: appends follow on from `streamed`
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
      synced = true;
      if (sink) sink.textContent = streamed;
    }
    if (typeof msg.append === "string" && synced) {
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

export default { initialize, render };
