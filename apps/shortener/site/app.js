// The page's behaviour: create a link through the API and list the recent ones.
"use strict";

const form = document.getElementById("create");
const result = document.getElementById("result");
const rows = document.querySelector("#recent tbody");
const empty = document.getElementById("empty");

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function linkCell(href, text) {
  const td = document.createElement("td");
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  td.appendChild(a);
  return td;
}

async function loadRecent() {
  const response = await fetch("/api/links");
  if (!response.ok) return;
  const links = await response.json();
  rows.replaceChildren(...links.map((link) => {
    const tr = document.createElement("tr");
    tr.append(linkCell("/r/" + link.code, "/r/" + link.code), cell(link.url, "url"), cell(String(link.hits), "num"));
    return tr;
  }));
  empty.hidden = links.length > 0;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  result.className = "";
  result.textContent = "…";
  const response = await fetch("/api/links", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ url: form.url.value }),
  });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (response.status === 201) {
    result.replaceChildren("Short link: ", Object.assign(document.createElement("a"), { href: body.short, textContent: body.short }));
    form.reset();
    loadRecent();
  } else {
    result.className = "error";
    result.textContent = body.error || "Could not create the link (" + response.status + ")";
  }
});

loadRecent();
