// The small form that asks for an API key when /v1 answers 401 (Api.newKey calls it, once for all the
// requests refused at the same time).

import { ApiError } from "./api.js";

const NEEDED =
  "This service needs an API key. It is kept in this browser tab only (sessionStorage) and sent " +
  "as an Authorization header.";
const REFUSED = "That key was refused. Check it and enter it again.";

// Resolves with the key typed, or rejects with a 401 ApiError when the form is cancelled (Escape too).
export function askForKey(refused) {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-reason").textContent = refused ? REFUSED : NEEDED;
  // From now on the header offers to change the key.
  document.getElementById("key-button").hidden = false;
  return new Promise((resolve, reject) => {
    dialog.addEventListener(
      "close",
      () => {
        const key = input.value.trim();
        input.value = "";
        if (dialog.returnValue === "ok" && key) resolve(key);
        else reject(new ApiError(401, "unauthorized", "An API key is needed to use this service."));
      },
      { once: true },
    );
    dialog.returnValue = "";
    dialog.showModal();
    input.focus();
  });
}
