"""The review page (``astrowatch ui`` runs ``streamlit run`` on this file).

The config comes from ``$ASTROWATCH_CONFIG`` (set by ``astrowatch ui --config``).  Buttons move
files exactly as a reviewer would; the daemon acts on them (at its next start if it is stopped).
"""

from __future__ import annotations

import json
import os
from typing import Any

import streamlit as st

from astrowatch.backends.base import progress_text
from astrowatch.core.config import find_config
from astrowatch.core.errors import AstrowatchError
from astrowatch.core.jobs import Decision, JobKind
from astrowatch.review.inbox import InboxItem, decide, inbox_items, original_path, parse_params, save_caption, waiting_for
from astrowatch.runtime.settings import load_config
from astrowatch.runtime.status import daemon_state
from astrowatch.storage.layout import Layout
from astrowatch.storage.ledger import Ledger
from astrowatch.storage.ledger_readonly import open_for_reading
from astrowatch.storage.safefs import lstat_or_none
from astrowatch.ui.views import (
    LOGIN_ENV,
    caption_fields,
    chart_wheel,
    final_description,
    image_bytes,
    original_preview,
    pick_caption,
    proposed_tags_text,
    variant_cells,
    variant_columns,
)

VERB = {Decision.APPROVE: "approved", Decision.REJECT: "rejected", Decision.REDO: "sent back for a redo"}


@st.cache_resource(show_spinner=False)
def _context(path: str, mtime: float) -> tuple[Any, Layout, Ledger]:
    config = load_config(path)
    layout = Layout(config.data_dir)
    return config, layout, open_for_reading(layout)  # reviewers read the ledger, never write it


@st.cache_data(show_spinner=False, max_entries=64)
def _wheel(job_id: str, path: str, mtime: float) -> Any:
    config, layout, ledger = _load()
    return chart_wheel(config, layout, ledger.get(job_id))


def _load() -> tuple[Any, Layout, Ledger]:
    path = find_config(None)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        mtime = 0.0
    return _context(str(path), mtime)


def _flash() -> None:
    for kind, text in st.session_state.pop("flash", []):
        (st.success if kind == "ok" else st.error)(text)


def _edited(config: Any, item: InboxItem) -> str | None:
    """The description as the reviewer left it: the box, line 1 from the caption and tag boxes
    when those were edited (:func:`astrowatch.ui.views.final_description`)."""
    job_id = item.job.id
    description = st.session_state.get(f"caption-{job_id}")
    if description is None:
        return None
    return final_description(st.session_state.get(f"file-{job_id}", ""), description,
                             st.session_state.get(f"sentence-{job_id}"), st.session_state.get(f"tags-{job_id}"),
                             item.sidecar(), config.dataset.trigger_word)


def _from_fields(config: Any, item: InboxItem) -> None:
    """The caption or tag box changed: rebuild line 1 of the description box."""
    try:
        st.session_state[f"caption-{item.job.id}"] = _edited(config, item)
    except AstrowatchError as exc:
        st.session_state["flash"] = [("error", f"{item.image.name}: {exc}")]


def _from_description(config: Any, item: InboxItem) -> None:
    """The description box changed: split its line 1 into the caption and tag boxes again."""
    job_id = item.job.id
    if f"sentence-{job_id}" in st.session_state:
        sentence, tags = caption_fields(st.session_state.get(f"caption-{job_id}") or "", item.sidecar(),
                                        config.dataset.trigger_word)
        st.session_state[f"sentence-{job_id}"], st.session_state[f"tags-{job_id}"] = sentence, tags


def _fill(config: Any, item: InboxItem, sidecar: dict[str, Any], with_fields: bool) -> None:
    """Fill the boxes from the files, first time and whenever the .txt changed on disk."""
    job_id = item.job.id
    text = item.caption()
    keys = [f"caption-{job_id}", *((f"sentence-{job_id}", f"tags-{job_id}") if with_fields else ())]
    if st.session_state.get(f"file-{job_id}") == text and all(k in st.session_state for k in keys):
        return
    st.session_state[f"file-{job_id}"] = text
    st.session_state[f"caption-{job_id}"] = text
    if with_fields:
        sentence, tags = caption_fields(text, sidecar, config.dataset.trigger_word)
        st.session_state[f"sentence-{job_id}"], st.session_state[f"tags-{job_id}"] = sentence, tags


def _act(config: Any, layout: Layout, item: InboxItem, decision: Decision, variant: int | None = None) -> None:
    """A button: the same move as ``astrowatch review`` (``variant``: the Pick button of variant K)."""
    job_id = item.job.id
    try:
        caption = _edited(config, item)
        if variant is not None:  # the box holds the contact sheet's text: only an edit goes to the pick
            caption = pick_caption(st.session_state.get(f"file-{job_id}"), caption)
        params = parse_params(st.session_state.get(f"params-{job_id}", "{}")) if decision == Decision.REDO else None
        dest = decide(config, layout, item, decision, caption=caption, params=params, variant=variant)
    except AstrowatchError as exc:
        st.session_state["flash"] = [("error", f"{item.image.name}: {exc}")]
        return
    except OSError as exc:  # moved by hand meanwhile, or a permission problem
        st.session_state["flash"] = [("error", f"{item.image.name}: could not move it: {exc.strerror or exc}")]
        return
    verb = f"picked (variant {variant})" if variant is not None else VERB[decision]
    st.session_state["flash"] = [("ok", f"{dest.name} {verb}: moved to {layout.rel(dest)}")]


def _save(config: Any, item: InboxItem) -> None:
    try:
        changed = save_caption(item, _edited(config, item) or "")
    except AstrowatchError as exc:
        st.session_state["flash"] = [("error", f"{item.image.name}: {exc}")]
        return
    st.session_state["flash"] = [("ok", f"description of {item.image.name} saved" if changed
                                  else f"description of {item.image.name} unchanged")]


@st.fragment(run_every=1.0)
def _running_now(layout: Layout) -> None:
    """The job each worker is drawing, with its steps, elapsed time and ETA (refreshed every second)."""
    for w in daemon_state(layout).get("workers", []):
        p = w.get("progress")
        if not (w.get("current_job") and p):
            continue
        fraction = min(p["step"] / p["total"], 1.0) if p.get("total") else 0.0
        st.progress(fraction, text=f"running {w['current_job']}: {progress_text(p)}")


def _sidebar(config: Any, layout: Layout, items: list[InboxItem]) -> str | None:
    st.sidebar.title("astrowatch")
    daemon = daemon_state(layout)
    st.sidebar.caption(f"data folder `{layout.root}`")
    up = bool(daemon.get("running"))  # daemon.json's flag (not a job state)
    if up:
        st.sidebar.success(f"daemon running (pid {daemon.get('pid')}): decisions apply within seconds")
    else:
        st.sidebar.info("daemon stopped: decisions apply at its next start")
    if up:
        with st.sidebar:
            _running_now(layout)
    users = sorted({i.job.user for i in items})
    counts = {u: sum(i.job.user == u for i in items) for u in users}
    if not users:
        return None
    choice = st.sidebar.radio("Inbox", ["everyone", *users], key="user",
                              format_func=lambda u: f"{u} ({counts[u] if u in counts else len(items)})")
    st.sidebar.button("Refresh", key="refresh")
    return None if choice == "everyone" else choice


def _original(config: Any, layout: Layout, ledger: Ledger, item: InboxItem) -> None:
    job = item.job
    if job.kind == JobKind.ASTRO:
        snapshot = layout.archive_dir(job.user, job.id) / job.source_name
        seen = lstat_or_none(snapshot, root=layout.root)
        mtime = seen.st_mtime if seen is not None else 0.0
        wheel = _wheel(job.id, str(snapshot), mtime)
        if wheel is not None:
            st.image(wheel, caption=f"chart wheel ({job.source_name})")
            return
    else:
        path = original_path(layout, ledger, job)
        preview = original_preview(path, config, layout.root) if path is not None else None
        if preview is not None:
            st.image(preview, caption=f"original ({job.source_name})")
            return
    st.caption("original not available")


def _controls(config: Any, layout: Layout, item: InboxItem, sidecar: dict[str, Any]) -> None:
    job_id = item.job.id
    decide_cols = st.columns(2)
    several = bool(item.variants())
    if not several:  # with variants, each has its Pick button (the contact sheet is never approved)
        decide_cols[0].button("Approve", key=f"approve-{job_id}", type="primary", on_click=_act,
                              args=(config, layout, item, Decision.APPROVE))
    decide_cols[1].button("Reject all" if several else "Reject", key=f"reject-{job_id}", on_click=_act,
                          args=(config, layout, item, Decision.REJECT))
    fields = item.job.kind == JobKind.ENHANCE and isinstance(sidecar.get("captions"), dict)
    _fill(config, item, sidecar, fields)
    st.text_area("Description (line 1 is the training caption)", key=f"caption-{job_id}", height=150,
                 on_change=_from_description, args=(config, item))
    if fields:
        st.text_input("Caption (after the trigger word)", key=f"sentence-{job_id}", on_change=_from_fields,
                      args=(config, item))
        st.text_area("Tags, in order (one a line: delete a line to remove a tag, add one, move lines to reorder)",
                     key=f"tags-{job_id}", height=120, on_change=_from_fields, args=(config, item))
        proposal = proposed_tags_text(sidecar)
        if proposal:
            st.caption("proposed: " + proposal)
    st.button("Save description", key=f"save-{job_id}", on_click=_save, args=(config, item))
    params = sidecar.get("params") if isinstance(sidecar.get("params"), dict) else {}
    st.text_area("Parameters (edit, then redo)", value=json.dumps(params, indent=2, ensure_ascii=False),
                 key=f"params-{job_id}", height=170)
    st.button("Redo with these settings", key=f"redo-{job_id}", on_click=_act,
              args=(config, layout, item, Decision.REDO))


def _variants(config: Any, layout: Layout, item: InboxItem, cells: list[Any]) -> None:
    """The variants side by side, each with its Pick button (``review pick JOB K``)."""
    columns = st.columns(variant_columns(len(cells)))
    for i, cell in enumerate(cells):
        with columns[i % len(columns)]:
            data = image_bytes(cell.image, config, layout.root)
            if data is not None:
                st.image(data, caption=cell.caption)
            else:
                st.caption(f"{cell.caption}: not readable (a link, a special file or too big)")
            st.button(cell.button, key=cell.key, type="primary", on_click=_act,
                      args=(config, layout, item, Decision.APPROVE, cell.k))


def _item(config: Any, layout: Layout, ledger: Ledger, item: InboxItem) -> None:
    job, sidecar = item.job, item.sidecar()
    with st.container(border=True):
        st.subheader(f"{job.source_name} · {job.kind}")
        st.caption(f"{job.user} · job {job.id} · {sidecar.get('backend') or '?'} · in the inbox since "
                   f"{waiting_for(job)} · `{layout.rel(item.image)}`")
        note = item.bounce_note()
        if note:
            st.warning(f"last decision was refused: {note}")
        stale = sidecar.get("stale")
        if isinstance(stale, dict):
            st.warning(f"stale result: {stale.get('note') or 'a newer chart of this user exists'}")
        left, middle, right = st.columns([1, 1, 1.2])
        with left:
            _original(config, layout, ledger, item)
        cells = variant_cells(item)
        with middle:
            if cells:
                st.caption(f"{len(cells)} variants below, side by side: **Pick** one to deliver exactly it "
                           "(its siblings are retired); Reject all, or Redo the chart.")
            else:
                result = image_bytes(item.image, config, layout.root)
                if result is not None:
                    st.image(result, caption="result")
                else:
                    st.caption("result not readable (a link, a special file or too big)")
        with right:
            _controls(config, layout, item, sidecar)
        if cells:
            _variants(config, layout, item, cells)
        learned = sidecar.get("learned")
        if isinstance(learned, dict) and learned:
            st.caption("learned: " + "; ".join(f"{k} = {v.get('value')!r} ({v.get('why')})"
                                                for k, v in learned.items() if isinstance(v, dict)))


def _login() -> None:
    """Beyond loopback (``astrowatch ui --host``), nothing is shown before the API token is given."""
    if os.environ.get(LOGIN_ENV) != "1" or st.session_state.get("signed_in"):
        return
    from astrowatch.api.auth import load_token, token_matches

    st.title("astrowatch review")
    try:
        token = load_token(load_config(find_config(None)))
    except AstrowatchError:
        token = None  # the page below says what is wrong with the config, once signed in
    given = st.text_input("Access token (the API token)", type="password", key="login-token")
    if st.button("Sign in", key="login"):
        if token is not None and token_matches(given.strip(), token):
            st.session_state["signed_in"] = True
            st.rerun()
        st.error("wrong token")
    st.stop()


def page() -> None:
    st.set_page_config(page_title="astrowatch review", page_icon=":sparkles:", layout="wide")
    _login()
    try:
        config, layout, ledger = _load()
    except AstrowatchError as exc:
        st.error(f"astrowatch: {exc}")
        st.stop()
    items = inbox_items(layout, ledger)
    user = _sidebar(config, layout, items)
    st.title("Review")
    _flash()
    shown = [i for i in items if user is None or i.job.user == user]
    if not shown:
        st.info(f"The inbox is empty. New results appear in `{layout.inbox}/<user>/`.")
        return
    st.caption(f"{len(shown)} result(s) waiting. Approve, reject, or edit the parameters and redo; "
               "each button moves the file exactly as you would by hand.")
    for item in shown:
        _item(config, layout, ledger, item)


page()
