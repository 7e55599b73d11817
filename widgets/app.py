"""JobManagerApp: sign in, then four tabs with live counts, a header and auto-refresh.

The same app runs in a JupyterLab notebook (``JobManagerApp(home)``) and, published
through Voila, as the operators' dashboard (notebooks/dashboard.ipynb). Everything
arriving from the browser is a widget value: it only ever reaches the service as
plain arguments, which the service checks.
"""

from __future__ import annotations

import asyncio
import html
import os
import threading
import time
from typing import Any

import ipywidgets as w

from jobmanager import JobManager, JobManagerError
from jobmanager.engine.states import FINISHED
from jobmanager.home import Home

from . import format as fmt
from .activity_view import ActivityPanel
from .agents_view import AgentsTab
from .downloads import DownloadArea
from .jobs_view import JobsTab
from .keyboard import on_enter, page_key
from .link import TABS as LINK_TABS
from .link import Link
from .link import parse as parse_link
from .models import Messages
from .schedules_view import SchedulesTab
from .theme import CSS

REFRESH_CHOICES = [("off", 0), ("2 s", 2), ("5 s", 5), ("15 s", 15), ("60 s", 60)]
TAB_TITLES = ["In Progress", "Completed", "Scheduled", "Agents"]
#: a tab's title -> its name in the page's link
TAB_KEYS = dict(zip(TAB_TITLES, LINK_TABS, strict=True))
#: seconds a message (a toast) stays before it clears itself: long enough to read, errors longer
TOAST_S = {"info": 8.0, "error": 20.0}
#: after an action, every tab's count is read again this many seconds later (see Dashboard._after_action)
RECOUNT_AFTER_S = (1.0, 2.5, 4.0)
#: seconds between the kernel's heartbeats to the page (the page calls itself disconnected after 6 s without)
HEARTBEAT_S = 2.0


class SignIn(w.VBox):
    """Username and password; the service checks them (and locks out repeated failures)."""

    def __init__(self, home: Home, on_success: Any) -> None:
        self.home, self.on_success = home, on_success
        self.username = w.Text(placeholder="username", description="Username", style={"description_width": "80px"})
        self.password = w.Password(placeholder="password", description="Password",
                                   style={"description_width": "80px"})
        self.button = w.Button(description="Sign in", button_style="primary", icon="sign-in",
                               layout=w.Layout(width="100%"))
        self.error = w.HTML()
        self.button.on_click(lambda _: self.submit())
        # Enter in either field signs in. Both boxes sync every keystroke (continuous_update): with
        # continuous_update=False the browser sent Enter's "submit" before the value, so Enter signed in
        # with an empty password.
        for box_ in (self.username, self.password):
            on_enter(box_, self.submit)
        box = w.VBox([w.HTML("<div class='jm-title' style='color:#0f172a'>Job Manager</div>"
                             f"<div class='jm-muted'>{html.escape(str(home.path))}</div><br>"),
                      self.username, self.password, self.button, self.error])
        box.add_class("jm-signin")
        super().__init__([box])

    def submit(self) -> None:
        user, password = self.username.value.strip(), self.password.value
        self.password.value = ""
        if not user or not password:
            self.error.value = "<div class='jm-message jm-message-error'>Enter your username and password.</div>"
            return
        try:
            jm = JobManager.sign_in(self.home, user, password, interface="dashboard")
        except JobManagerError as exc:
            self.error.value = f"<div class='jm-message jm-message-error'>{html.escape(str(exc))}</div>"
            return
        self.error.value = ""
        self.on_success(jm)


class Header(w.HBox):
    def __init__(self, jm: JobManager, on_sign_out: Any, on_refresh_interval: Any) -> None:
        self.title = w.HTML(f"<span class='jm-title'>Job Manager</span> <span class='jm-muted'>· home: "
                            f"{html.escape(str(jm.home.path))}</span>")
        self.agents = w.HTML()
        self.updated = w.HTML()
        self.updated.add_class("jm-updated")
        self.interval = w.Dropdown(options=REFRESH_CHOICES, value=5, description="auto-refresh",
                                   style={"description_width": "82px"}, layout=w.Layout(width="170px"))
        self.interval.observe(lambda c: on_refresh_interval(c["new"]), "value")
        self.user = w.HTML(f"<b>{html.escape(jm.user)}</b>")
        self.sign_out = w.Button(description="Sign out", icon="sign-out", layout=w.Layout(width="auto"))
        self.sign_out.on_click(lambda _: on_sign_out())
        spacer = w.HTML(layout=w.Layout(flex="1"))
        super().__init__([self.title, spacer, self.agents, self.interval, self.updated, self.user, self.sign_out])
        self.add_class("jm-header")

    def show_agents(self, counts: dict[str, int]) -> None:
        online = counts.get("busy", 0) + counts.get("idle", 0)
        lost = counts.get("lost", 0)
        lost_text = (f" · <span class='jm-badge jm-pulse' style='color:#b91c1c;background:#fee2e2'>{lost} lost"
                     f"</span>" if lost else "")
        self.agents.value = (f"<span class='jm-dot' style='background:#22c55e'></span>{online} agent"
                             f"{'s' if online != 1 else ''} online{lost_text}&nbsp;&nbsp;")

    def show_updated(self, at: float) -> None:
        age = time.time() - at
        self.updated.value = f"<span class='jm-muted'>&nbsp;updated {fmt.duration(age) if age >= 1 else 'now'}" \
                             f"{' ago' if age >= 1 else ''}&nbsp;</span>"


class Dashboard(w.VBox):
    """The signed-in view: header, message bar, downloads, four tabs."""

    def __init__(self, jm: JobManager, on_sign_out: Any, on_link: Any = None) -> None:
        self.jm = jm
        #: called with the page's link (the hash) whenever the open tab, job or filters change
        self.on_link = on_link
        self._link = ""
        self.messages = Messages()
        me = jm.me()
        perms = set(me["permissions"])
        self.downloads = DownloadArea()
        self.message_bar = w.HTML()  # a toast: fixed over the page's corner, it never pushes the layout
        self.message_bar.add_class("jm-toasts")
        self._message_at = 0.0
        self._recount_at: list[float] = []
        self.messages.observe(self._show_message, ["message", "kind"])
        self.messages.observe(lambda _: setattr(self, "_message_at", time.monotonic()), ["done"])
        self.messages.observe(self._after_action, ["done"])
        self.header = Header(jm, on_sign_out, self.set_interval)
        can = lambda p: p in perms or "admin" in perms  # noqa: E731
        self.views: list[Any] = []
        children: list[w.Widget] = []
        titles: list[str] = []
        for title, make, needed in (
            ("In Progress", lambda: JobsTab(jm, self.messages, "in-progress", perms, self.downloads), "view"),
            ("Completed", lambda: JobsTab(jm, self.messages, "completed", perms, self.downloads), "view"),
            ("Scheduled", lambda: SchedulesTab(jm, self.messages, perms), "view_schedules"),
            ("Agents", lambda: AgentsTab(jm, self.messages, perms), "view_agents"),
        ):
            ok = (can("view_own_jobs") or can("view_all_jobs")) if needed == "view" else can(needed)
            if not ok:
                continue
            view = make()
            self.views.append(view)
            children.append(view)
            titles.append(title)
        self.titles = titles
        self.tabs = w.Tab(children=children, titles=titles)
        self.tabs.observe(lambda _: self.refresh(), "selected_index")
        body: list[w.Widget] = [self.header, self.message_bar, self.downloads]
        #: the activity strip above the tabs (counts only the jobs this user may see)
        self.activity = ActivityPanel(jm, self.messages) if can("view_own_jobs") or can("view_all_jobs") else None
        if self.activity is not None:
            body.append(self.activity)
            self.activity.toggle.observe(lambda _: self._refit_grids(), "value")
        body.append(self.tabs if children else w.HTML(
            "<div class='jm-empty'>Your groups hold no Job Manager view permissions. Ask an administrator.</div>"))
        self._lock = threading.RLock()
        self._counting = False
        self._interval = 5
        self._stop = threading.Event()
        self.last_refresh = 0.0
        super().__init__(body)
        self.refresh(all_tabs=True)
        self._last_all = time.time()
        try:  # in a kernel: tick on its event loop, the thread that also runs the widgets' handlers
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # plain Python (tests, scripts): a thread
            self._loop = None
        if self._loop is not None:
            self._loop.call_later(1.0, self._tick_on_loop)
        else:
            threading.Thread(target=self._tick, name="jm-refresh", daemon=True).start()

    def _show_message(self, _: Any = None) -> None:
        m = self.messages
        self._message_at = time.monotonic()
        role = "alert" if m.kind == "error" else "status"
        self.message_bar.value = (f"<div class='jm-toast jm-message jm-message-{m.kind}' role='{role}'>"
                                  f"{html.escape(m.message)}</div>" if m.message else "")

    def _expire_message(self) -> None:
        """Clear the toast once it has been up for its time (a new message starts the clock again)."""
        m = self.messages
        if m.message and time.monotonic() - self._message_at > TOAST_S.get(m.kind, 8.0):
            m.clear()

    def _after_action(self, _: Any = None) -> None:
        """A message means an action ran (or failed): every tab's count now, not at the next full refresh.

        Then again a few times over the next seconds: each tab is counted by its own query, so a job an
        agent moves between two of them (a retried job that finishes at once) is counted twice or not at
        all; the recounts settle the titles to the tabs' totals without waiting for the full refresh.
        """
        if self._counting:  # a message written while counting (an error) must not count again
            return
        now = time.monotonic()
        self._recount_at = [now + d for d in RECOUNT_AFTER_S]
        self._count_tabs()

    def _count_tabs(self) -> None:
        self._counting = True
        try:
            with self._lock:
                for view in self.views:
                    if hasattr(view, "refresh_total"):
                        view.refresh_total()
                self._update_titles()
        except JobManagerError as exc:
            self.messages.error(str(exc))
        finally:
            self._counting = False

    def refresh(self, all_tabs: bool = False) -> None:
        """Re-read the visible tab (every tab's count): selection, sort, page and filters stay."""
        with self._lock:
            try:
                index = self.tabs.selected_index or 0
                for i, view in enumerate(self.views):
                    if all_tabs or i == index:
                        view.refresh()
                if self.activity is not None:
                    self.activity.refresh()
                self._update_titles()
            except JobManagerError as exc:
                self.messages.error(str(exc))
            self.last_refresh = time.time()
            self.header.show_updated(self.last_refresh)

    def _refit_grids(self) -> None:
        """The activity strip folded or opened: the grids' room follows it in CSS (a variable), but a DataGrid
        redraws its canvas for a new height only when its own layout changes, so set each height again."""
        for view in self.views:
            grid = getattr(view, "grid", None)
            if grid is not None and grid.layout.height:
                height, grid.layout.height = grid.layout.height, None
                grid.layout.height = height

    def _update_titles(self) -> None:
        titles = []
        for title, view in zip(self.titles, self.views, strict=True):
            if isinstance(view, JobsTab):
                n = view.model.tab_total
            elif isinstance(view, SchedulesTab):
                n = len(view.rows)
            else:
                n = len(view.df)
            titles.append(f"{title} ({fmt.count(n)})")
        for view in self.views:
            if isinstance(view, AgentsTab):
                self.header.show_agents(view.counts())
        if list(self.tabs.titles) != titles:
            self.tabs.titles = titles

    def set_interval(self, seconds: int) -> None:
        self._interval = seconds

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self._tick_once()

    def _tick_on_loop(self) -> None:
        if self._stop.is_set() or self._loop is None:
            return
        self._tick_once()
        self._loop.call_later(1.0, self._tick_on_loop)

    # -- the page's link ----------------------------------------------------------------------------
    def current_link(self) -> str:
        """The hash that reopens this view: the tab, its filters and the open job."""
        if not self.views:
            return ""
        index = self.tabs.selected_index or 0
        view = self.views[index]
        link = Link(tab=TAB_KEYS[self.titles[index]])
        if isinstance(view, JobsTab):
            link.filters = view.link_filters()
            link.job = view.details.job_id
        return link.encode()

    def publish_link(self) -> None:
        text = self.current_link()
        if text != self._link:
            self._link = text
            if self.on_link is not None:
                self.on_link(text)

    def apply_link(self, text: str) -> None:
        """Open what a pasted link names; anything bad in it is ignored and named in one notice."""
        jobs_tabs = {TAB_KEYS[t]: v for t, v in zip(self.titles, self.views, strict=True) if isinstance(v, JobsTab)}
        states = {k: v.link_choices()[0] for k, v in jobs_tabs.items()}
        types = set().union(*(v.link_choices()[1] for v in jobs_tabs.values())) if jobs_tabs else set()
        times = set().union(*(v.link_choices()[2] for v in jobs_tabs.values())) if jobs_tabs else set()
        link, ignored = parse_link(text, states=states, types=types, times=times)
        keys = [TAB_KEYS[t] for t in self.titles]
        tab = link.tab
        if link.job is not None:
            try:
                job = self.jm.job(link.job)
            except JobManagerError as exc:
                ignored.append(f"job {link.job} ({exc})")
                link.job = None
            else:
                tab = tab if tab in jobs_tabs else ("completed" if job.state in FINISHED else "in-progress")
        if tab is not None and tab not in keys:
            ignored.append(f"tab {tab} (you cannot see it)")
            tab = None
        with self._lock:
            if tab is not None:
                self.tabs.selected_index = keys.index(tab)
            view = self.views[keys.index(tab)] if tab is not None else None
            if isinstance(view, JobsTab):
                if link.filters:
                    ignored += view.apply_filters(link.filters)
                if link.job is not None:
                    view.details.show(link.job)
        if ignored:
            self.messages.info("Ignored from the link: " + "; ".join(ignored))
        self.publish_link()

    def _tick_once(self) -> None:
        """Every second: the "updated N s ago" line; every interval: the visible tab (all of them now and then)."""
        self.publish_link()
        self._expire_message()
        if self._recount_at and time.monotonic() >= self._recount_at[0]:
            self._recount_at.pop(0)
            self._count_tabs()
        try:
            view = self.views[self.tabs.selected_index or 0] if self.views else None
            if isinstance(view, JobsTab):
                view.details.follow_tick()  # a running job's log, tail -f
        except Exception as exc:  # the ticker must survive anything; show it as one line
            self.messages.error(f"log refresh failed: {exc}")
        try:
            if self._interval and time.time() - self.last_refresh >= self._interval:
                full = time.time() - self._last_all >= max(15, self._interval * 3)
                self.refresh(all_tabs=full)
                if full:
                    self._last_all = time.time()
            else:
                self.header.show_updated(self.last_refresh)
        except Exception as exc:  # the ticker must survive anything; show it as one line
            self.messages.error(f"refresh failed: {exc}")

    def on_key(self, key: str) -> None:
        """A key pressed on the page (already checked by keyboard.page_key): the visible job tab moves its
        highlighted row, opens or closes details."""
        with self._lock:
            view = self.views[self.tabs.selected_index or 0] if self.views else None
            if isinstance(view, JobsTab):
                view.key(key)

    def close_dashboard(self) -> None:
        self._stop.set()
        self.jm.close()


class JobManagerApp(w.VBox):
    """The whole app: ``JobManagerApp(home)`` in a notebook cell, or the Voila dashboard."""

    def __init__(self, home: str | os.PathLike[str] | Home | None = None, *, user: str | None = None) -> None:
        self.home = home if isinstance(home, Home) else Home.open(home)
        self.dashboard: Dashboard | None = None
        self.style = w.HTML(CSS)
        # The page's script (the dashboard's Voila template) types the browser's time zone in here,
        # so exact times on hover read in the viewer's own zone (see format.set_viewer_zone).
        self.browser_zone = w.Text(layout=w.Layout(display="none"))
        self.browser_zone.add_class("jm-browser-zone")
        self.browser_zone.observe(lambda change: fmt.set_viewer_zone(change["new"]), "value")
        # The page's script (the Voila template) watches this value: when it stops changing and the
        # kernel is not busy, or the server stops answering, the page shows itself disconnected.
        self.heartbeat = w.Text(value="0", layout=w.Layout(display="none"))
        self.heartbeat.add_class("jm-heartbeat")
        # The page's link: the page's script (the Voila template) types the URL's hash in here on load and
        # when it changes, and copies what the app writes here back into the address bar (link.py).
        self.location = w.Text(value="", layout=w.Layout(display="none"))
        self.location.add_class("jm-location")
        self._pending_link = ""
        self._written_link = ""
        self.location.observe(self._on_location, "value")
        # Keyboard: the page's script (the Voila template) types "down 17" (a key and a counter, so the same
        # key twice still changes the value) in here for ↑ ↓ Enter Esc; anything else is ignored (keyboard.py).
        self.key_box = w.Text(value="", layout=w.Layout(display="none"))
        self.key_box.add_class("jm-keys")
        self.key_box.observe(self._on_key, "value")
        self.style_box = w.VBox([self.style, self.browser_zone, self.heartbeat, self.location, self.key_box])
        super().__init__([self.style_box])
        self.add_class("jm-app")
        try:  # in a kernel: beat on its event loop (plain Python has no page to tell)
            asyncio.get_running_loop().call_later(HEARTBEAT_S, self._beat)
        except RuntimeError:
            pass
        if user is not None:  # an analyst's own kernel: they already hold the home's files
            self._signed_in(JobManager(self.home, user=user, interface="python"))
        else:
            self._show_sign_in()

    def _beat(self) -> None:
        self.heartbeat.value = str(int(self.heartbeat.value or 0) + 1)
        try:
            asyncio.get_running_loop().call_later(HEARTBEAT_S, self._beat)
        except RuntimeError:
            pass

    def _on_location(self, change: dict[str, Any]) -> None:
        text = str(change["new"] or "")
        if text == self._written_link:  # our own write coming back
            return
        if self.dashboard is None:
            self._pending_link = text  # opened after sign-in
        else:
            self.dashboard.apply_link(text)

    def _on_key(self, change: dict[str, Any]) -> None:
        key = page_key(change["new"])
        if key is not None and self.dashboard is not None:
            self.dashboard.on_key(key)

    def _write_link(self, text: str) -> None:
        self._written_link = text
        self.location.value = text

    def _show_sign_in(self) -> None:
        self.children = [self.style_box, SignIn(self.home, self._signed_in)]

    def _signed_in(self, jm: JobManager) -> None:
        self.dashboard = Dashboard(jm, self._sign_out, on_link=self._write_link)
        self.children = [self.style_box, self.dashboard]
        if self._pending_link:
            link, self._pending_link = self._pending_link, ""
            self.dashboard.apply_link(link)

    def _sign_out(self) -> None:
        if self.dashboard is not None:
            self.dashboard.close_dashboard()
            self.dashboard = None
        self._show_sign_in()
