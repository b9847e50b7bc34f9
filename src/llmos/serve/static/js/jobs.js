// The caller's background jobs (GET /v1/jobs): each with a progress bar, its status, message
// and last log line, and a Cancel button while it is queued or running (POST
// /v1/jobs/{id}/cancel). The list refreshes every second while a job is unfinished and the
// page is shown.

import { call } from "./api.js";
import { bar, busy, h, page } from "./ui.js";

export const FINISHED = ["done", "failed", "cancelled"];

/** One job as a panel: its progress bar, status and message, last log line, and Cancel. */
export function jobRow(job, refresh) {
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  cancel.onclick = () =>
    busy(cancel, async () => {
      await call("POST", `/v1/jobs/${job.id}/cancel`);
      await refresh();
    });
  const last = job.error || job.log[job.log.length - 1] || "";
  return h(
    "div",
    { class: "panel job", "data-job": String(job.id), "data-status": job.status },
    bar(`${job.kind} #${job.id}`, job.progress),
    h(
      "p",
      { class: "muted" },
      `${job.status}${job.attempts > 1 ? ` (attempt ${job.attempts})` : ""}`,
      job.message ? ` · ${job.message}` : "",
    ),
    last && h("pre", {}, last),
    FINISHED.includes(job.status) ? null : cancel,
  );
}

export async function jobs() {
  const list = h("div", { id: "jobs" });
  const refresh = async () => {
    const { jobs: found } = await call("GET", "/v1/jobs");
    list.replaceChildren(
      ...(found.length ? found.map((j) => jobRow(j, refresh)) : [h("p", { class: "muted" }, "No jobs yet.")]),
    );
    return found.some((j) => !FINISHED.includes(j.status));
  };
  let live = await refresh();
  const timer = setInterval(async () => {
    if (!document.body.contains(list)) return clearInterval(timer);
    if (live) live = await refresh().catch(() => false);
  }, 1000);
  return page(
    "Jobs",
    "Long work started for you (training an adapter, …), run by the server's workers.",
    list,
  );
}
