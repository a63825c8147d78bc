// One image at a time: the page knows the rater's progress and the opaque id of the current
// image, never whether it is real. Answers go to the server one by one; nothing is kept here.
"use strict";

const token = location.pathname.split("/")[2];
const api = `/api/r/${token}`;
const $ = (id) => document.getElementById(id);
let state = null;
let answer = null;
let confidence = null;
let imageReady = false;
let busy = false;

function updateNext() {
  $("next").disabled = busy || !imageReady || answer === null || confidence === null;
}

function choose(value) {
  answer = value;
  $("real").setAttribute("aria-pressed", String(value === "real"));
  $("synthetic").setAttribute("aria-pressed", String(value === "synthetic"));
  updateNext();
}

function setConfidence(value) {
  confidence = value;
  for (const radio of document.querySelectorAll("input[name=confidence]")) {
    radio.checked = Number(radio.value) === value;
  }
  updateNext();
}

function render() {
  $("who").textContent = state.name;
  $("progress").max = state.total;
  $("progress").value = state.answered;
  if (state.item === null) {
    const r = state.result;
    $("quiz").hidden = true;
    $("done").hidden = false;
    $("result").textContent = `You judged all ${state.total} images: ${r.correct} of ${r.total} ` +
      `(${Math.round((100 * r.correct) / r.total)}%) were right.`;
    return;
  }
  $("count").textContent = `Image ${state.answered + 1} of ${state.total}`;
  const select = $("diagnosis");
  if (state.diagnoses.length && select.options.length === 1) {
    for (const name of state.diagnoses) select.add(new Option(name.replaceAll("_", " "), name));
    $("diagnosis-row").hidden = false;
  }
  select.value = "";
  choose(null);
  setConfidence(null);
  imageReady = false;
  const img = $("lesion");
  img.classList.add("loading");
  img.src = `${api}/image/${state.item}`;
  $("quiz").hidden = false;
}

async function load() {
  const response = await fetch(`${api}/state`, { cache: "no-store" });
  if (!response.ok) throw new Error(`could not load the quiz (${response.status})`);
  state = await response.json();
  render();
}

async function submit() {
  if ($("next").disabled) return;
  busy = true;
  updateNext();
  const body = { item: state.item, answer, confidence };
  if ($("diagnosis").value) body.diagnosis = $("diagnosis").value;
  try {
    const response = await fetch(`${api}/answer`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (response.ok) {
      $("error").textContent = "";
      state = await response.json();
      render();
    } else if (response.status === 409) {
      await load(); // answered elsewhere (another tab): continue from the server's position
    } else {
      $("error").textContent = `The answer was not saved (${response.status}); please try again.`;
    }
  } catch (err) {
    $("error").textContent = "The server cannot be reached; your earlier answers are safe. Please try again.";
  } finally {
    busy = false;
    updateNext();
  }
}

$("lesion").addEventListener("load", () => {
  imageReady = true;
  $("lesion").classList.remove("loading");
  updateNext();
});
$("real").addEventListener("click", () => choose("real"));
$("synthetic").addEventListener("click", () => choose("synthetic"));
for (const radio of document.querySelectorAll("input[name=confidence]")) {
  radio.addEventListener("change", () => setConfidence(Number(radio.value)));
}
$("next").addEventListener("click", submit);
document.addEventListener("keydown", (event) => {
  if (event.ctrlKey || event.metaKey || event.altKey || event.target.tagName === "SELECT") return;
  const key = event.key.toLowerCase();
  if (key === "r") choose("real");
  else if (key === "s") choose("synthetic");
  else if (["1", "2", "3", "4", "5"].includes(key)) setConfidence(Number(key));
  else if (key === "enter") submit();
  else return;
  event.preventDefault();
});

load().catch((err) => {
  $("error").textContent = err.message;
  $("quiz").hidden = false;
});
