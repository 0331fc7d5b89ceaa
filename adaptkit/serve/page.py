"""The page at ``/``: choose or drop images, see the top-5 classes as bars and the model card.
Self-contained (inline style and script, no external assets), so it works offline."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>adaptkit: try the model</title>
<link rel="icon" href="data:,">
<style>
body { font: 15px/1.4 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #222; }
h1 { font-size: 1.4rem; }
#drop { border: 2px dashed #888; border-radius: 8px; padding: 2rem; text-align: center; cursor: pointer; }
#drop.over { background: #eef5ff; border-color: #36c; }
.result { display: flex; gap: 1rem; margin: 1rem 0; align-items: flex-start; }
.result img { width: 128px; height: 128px; object-fit: cover; border-radius: 4px; }
.bars { flex: 1; }
.bar { display: flex; align-items: center; gap: .5rem; margin: .15rem 0; }
.bar .label { width: 12rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.bar .track { flex: 1; background: #eee; border-radius: 3px; height: 1rem; }
.bar .fill { background: #36c; height: 100%; border-radius: 3px; }
.error { color: #b00; }
#card { background: #f6f6f6; padding: .75rem 1rem; border-radius: 6px; font-size: 13px; }
#key { display: none; margin: .5rem 0; }
</style>
</head>
<body>
<h1>adaptkit: try the model</h1>
<div id="card">loading the model card…</div>
<div id="key">API key: <input id="apikey" type="password" size="40"> <button id="usekey">use</button></div>
<p></p>
<div id="drop">Drop images here, or click to choose them<input id="files" type="file" accept="image/*" multiple hidden></div>
<div id="results"></div>
<script>
"use strict";
const headers = () => {
  const key = document.getElementById("apikey").value;
  return key ? {"Authorization": "Bearer " + key} : {};
};
function text(tag, content, cls) {
  const node = document.createElement(tag);
  node.textContent = content;
  if (cls) node.className = cls;
  return node;
}
async function loadCard() {
  const card = document.getElementById("card");
  const response = await fetch("v1/model", {headers: headers()});
  if (response.status === 401) {
    document.getElementById("key").style.display = "block";
    card.textContent = "this server needs an API key";
    return;
  }
  const model = await response.json();
  card.replaceChildren(
    text("div", "adapter: " + model.adapter + " " + JSON.stringify(model.params)),
    text("div", "backbone: " + model.backbone.model + " (" + model.backbone.weights + ")"),
    text("div", model.classes.length + " classes: " + model.classes.slice(0, 12).join(", ") +
         (model.classes.length > 12 ? ", …" : "")),
    text("div", "adaptkit " + model.adaptkit + ", adapter file sha256 " + String(model.adapter_sha256).slice(0, 16)));
}
function showResult(file, result) {
  const row = document.createElement("div");
  row.className = "result";
  const image = document.createElement("img");
  image.src = URL.createObjectURL(file);
  image.alt = file.name;
  const bars = document.createElement("div");
  bars.className = "bars";
  bars.appendChild(text("div", file.name));
  if (result.error) {
    bars.appendChild(text("div", result.error, "error"));
  } else {
    for (const entry of result.top) {
      const bar = document.createElement("div");
      bar.className = "bar";
      const track = document.createElement("div");
      track.className = "track";
      const fill = document.createElement("div");
      fill.className = "fill";
      fill.style.width = (100 * entry.probability).toFixed(1) + "%";
      track.appendChild(fill);
      bar.append(text("span", entry.class, "label"), track, text("span", (100 * entry.probability).toFixed(1) + "%"));
      bars.appendChild(bar);
    }
  }
  row.append(image, bars);
  document.getElementById("results").prepend(row);
}
async function classify(files) {
  if (!files.length) return;
  const body = new FormData();
  for (const file of files) body.append("images", file, file.name);
  body.append("top_k", "5");
  const response = await fetch("v1/classify", {method: "POST", body: body, headers: headers()});
  const answer = await response.json();
  if (!response.ok) {
    document.getElementById("results").prepend(text("p", answer.error, "error"));
    return;
  }
  answer.results.forEach((result, i) => showResult(files[i], result));
}
const drop = document.getElementById("drop");
const input = document.getElementById("files");
drop.addEventListener("click", () => input.click());
input.addEventListener("change", () => classify([...input.files]));
drop.addEventListener("dragover", event => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", event => {
  event.preventDefault();
  drop.classList.remove("over");
  classify([...event.dataTransfer.files]);
});
document.getElementById("usekey").addEventListener("click", loadCard);
loadCard();
</script>
</body>
</html>
"""
