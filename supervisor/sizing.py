"""How many web and worker processes run: sized from the limits at start, then from measurement.

Two halves, one question ("how is concurrency sized?"):

1. At start (`apply_sizing`, called while the plan is built): the memory and CPU limits
   (`resources`) and per-process estimates (ESTIMATES) give how many web processes and worker
   units fit (`size`). The counts reach each tool through its own knob (WEB_CONCURRENCY,
   START_ALL_WORKER_CONCURRENCY, celery's --concurrency); what the user set is never changed.
   Without a memory limit (a laptop, a VM) the host's RAM is not ours to fill, so the CPU count
   caps the counts tighter.
2. After start (`WebSizer`, run by the probe thread inside PID 1): a gunicorn whose worker count
   we chose starts low (1 worker), and its workers' real memory (PSS) is measured. While another
   worker fits under the memory limit (after the supervisor, the other processes and headroom)
   and under the CPU cap, the master gets SIGTTIN, one worker at a time; when the measured
   workers no longer fit, SIGTTOU. This half imports only the standard library (PID 1 stays
   lean); the first half's imports are local to it.
"""

from __future__ import annotations

import os
import threading
import time

from supervisor import resources

TYPE_CHECKING = False  # not `typing.TYPE_CHECKING`: importing typing costs PID 1 2 MB
if TYPE_CHECKING:
    from collections.abc import Mapping

    from supervisor.plan import ProcessSpec
    from supervisor.settings import Settings

MB = resources.MB
WEB_KINDS = ("gunicorn", "uvicorn")
WORKER_KINDS = ("qcluster", "celery-worker", "native")
ADAPTIVE_KINDS = ("gunicorn",)  # answers SIGTTIN/SIGTTOU with one worker more/less
ADAPTIVE_START = 1  # web workers an adaptive gunicorn starts with, before anything is measured

# Per-process memory estimates (MiB) used for sizing at start; documented in docs/health.md.
# Measured here (PSS): gunicorn + 1 sync worker + minimal Django ~ 56; qcluster workers=1 ~ 68
# over 5 processes. Real applications import more than the fixtures, hence the margins; the
# web count is then corrected from measurement (WebSizer).
ESTIMATES = {
    "supervisor": 16,  # PID 1 itself, health server on
    "web_base": 30,  # gunicorn/uvicorn master
    "web_per_worker": 90,  # one web worker process with a Django-sized application loaded
    "worker_base": 60,  # qcluster main + sentinel + monitor + pusher; celery main; native main
    "worker_per_unit": 80,  # one worker process (qcluster/celery prefork child)
    "native_per_unit": 10,  # one more concurrent task slot in the native worker (threads)
    "native_prefork_per_unit": 45,  # a prefork child of the native worker (up to ~46 MiB RSS)
    "headroom_share": 0.10,  # kept free for page cache, spikes and `start-all status`
}


# ----- 1. at start: estimates ---------------------------------------------------------------------


def cpu_caps(cpus: float, memory_bounded: bool) -> tuple[int, int]:
    """(web, worker) most processes for `cpus`.

    Under a memory limit memory is what binds, and the usual gunicorn rule applies (web
    2*CPUs+1, worker 2*CPUs, at least 2). Without one, the CPUs are the only bound and the host
    is shared: web CPUs+1, worker CPUs (a 2-core laptop: 3 web, 2 worker, not 5 and 4).
    """
    whole = max(1, int(cpus + 0.999))
    if memory_bounded:
        return 2 * whole + 1, max(2, 2 * whole)
    return whole + 1, whole


def size(
    limit: int,
    cpus: float,
    web: int | None,
    worker: int | None,
    has_web: bool,
    worker_kind: str | None,
    estimates: dict | None = None,
    memory_bounded: bool = True,
) -> dict:
    """How many web processes and worker units fit in `limit` bytes.

    `web`/`worker` are the counts the user set (None = ours to choose). The minimum plan (one of
    each) must fit or the plan is refused; then one more slot at a time goes to web and worker
    in turn while memory lasts, capped by CPU (`cpu_caps`). Returns the counts and the
    reasoning lines for --dry-run.
    """
    e = {**ESTIMATES, **(estimates or {})}
    per_unit = {"native": e["native_per_unit"], "native-prefork": e["native_prefork_per_unit"]
                }.get(worker_kind or "", e["worker_per_unit"])
    mb = limit // MB
    headroom = int(mb * e["headroom_share"])
    budget = mb - e["supervisor"] - headroom
    reasons = [
        f"memory {mb} MiB - supervisor {e['supervisor']} - headroom {headroom} "
        f"({e['headroom_share']:.0%}) = {budget} MiB for the processes",
    ]
    web_cap, worker_cap = cpu_caps(cpus, memory_bounded)
    web_n = (web or 1) if has_web else 0
    worker_n = (worker or 1) if worker_kind else 0

    def cost(w: int, k: int) -> int:
        total = (e["web_base"] + w * e["web_per_worker"]) if has_web else 0
        if worker_kind:
            total += e["worker_base"] + k * per_unit
        return total

    if cost(web_n, worker_n) > budget:
        parts = []
        if has_web:
            parts.append(f"web {e['web_base']} + {web_n} x {e['web_per_worker']}")
        if worker_kind:
            parts.append(f"worker {e['worker_base']} + {worker_n} x {per_unit}")
        return {
            "fits": False,
            "web": web_n,
            "worker": worker_n,
            "reasons": reasons,
            "error": f"needs {cost(web_n, worker_n)} MiB ({' + '.join(parts)}) but only "
            f"{budget} MiB of the {mb} MiB limit are available",
        }
    grew = True
    while grew:
        grew = False
        if has_web and web is None and web_n < web_cap and cost(web_n + 1, worker_n) <= budget:
            web_n += 1
            grew = True
        if (
            worker_kind
            and worker is None
            and worker_n < worker_cap
            and cost(web_n, worker_n + 1) <= budget
        ):
            worker_n += 1
            grew = True
    cap_rule = "" if memory_bounded else ", no memory limit"
    if has_web:
        how = (
            "set by you"
            if web is not None
            else f"sized; CPU cap {web_cap} for {cpus:g} CPUs{cap_rule}"
        )
        reasons.append(
            f"web: {web_n} processes x {e['web_per_worker']} + master {e['web_base']} MiB ({how})"
        )
    if worker_kind:
        how = "set by you" if worker is not None else f"sized; CPU cap {worker_cap}{cap_rule}"
        reasons.append(
            f"worker: concurrency {worker_n} x {per_unit} + base {e['worker_base']} MiB ({how})"
        )
    reasons.append(f"estimated total {cost(web_n, worker_n)} of {budget} MiB")
    return {
        "fits": True,
        "web": web_n,
        "worker": worker_n,
        "reasons": reasons,
        "error": None,
        "worker_mib": (e["worker_base"] + worker_n * per_unit) if worker_kind else 0,
    }


# ----- 1. at start: the user's counts and each tool's knob ----------------------------------------


def _option(words: tuple[str, ...], short: str | None, long: str) -> str | None:
    """The value of `-w 3`, `-w3`, `--workers 3` or `--workers=3` among `words`, if given."""
    for i, word in enumerate(words):
        if word == long or (short and word == short):
            return words[i + 1] if i + 1 < len(words) else ""
        if word.startswith(long + "="):
            return word.split("=", 1)[1]
        if short and word.startswith(short) and len(word) > len(short) and word[2:].isdigit():
            return word[len(short):]
    return None


def _count(value: str | None, name: str) -> int | None:
    from supervisor.settings import ConfigError

    if value is None:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{name}: expected a whole number >= 1 (got {value[:40]!r})")
    return int(value)


def _explicit_web(spec: ProcessSpec, environ: Mapping[str, str]) -> tuple[int | None, bool]:
    """(count, set_by_user): what the user chose for the web server's processes."""
    import shlex

    from supervisor import commands

    # gunicorn and uvicorn read WEB_CONCURRENCY even when -w wins: a bad value crashes them
    from_env = _count(environ["WEB_CONCURRENCY"], "WEB_CONCURRENCY") if (
        "WEB_CONCURRENCY" in environ) else None
    words = commands.parse(spec.command).program
    value = _option(words, "-w" if spec.kind == "gunicorn" else None, "--workers")
    if value is not None:
        return _count(value, f"process {spec.name!r} --workers"), True
    if spec.kind == "gunicorn":
        cmd_args = tuple(shlex.split(environ.get("GUNICORN_CMD_ARGS", "")))
        value = _option(cmd_args, "-w", "--workers")
        if value is not None:
            return _count(value, "GUNICORN_CMD_ARGS --workers"), True
    if from_env is not None:
        return from_env, True
    return None, False


def _explicit_worker(spec: ProcessSpec, settings: Settings) -> tuple[int | None, bool]:
    from supervisor import commands

    words = commands.parse(spec.command).program
    short = "-c" if spec.kind == "celery-worker" else None
    value = _option(words, short, "--concurrency")
    if value is not None:
        return _count(value, f"process {spec.name!r} --concurrency"), True
    if settings.worker_concurrency is not None:
        return settings.worker_concurrency, True
    return None, False


def _worker_kind(spec: ProcessSpec | None, settings: Settings) -> str | None:
    """The worker's kind for the estimates: a native worker with processes costs more."""
    if spec is None:
        return None
    if spec.kind == "native":
        from supervisor import commands

        words = commands.parse(spec.command).program
        pool = _option(words, "-P", "--pool") or settings.worker_pool or "threads"
        if pool in ("prefork", "processes"):
            return "native-prefork"
    return spec.kind


def _execs(spec: ProcessSpec) -> bool:
    from supervisor import commands

    return commands.parse(spec.command).execs


def apply_sizing(
    specs: tuple[ProcessSpec, ...], settings: Settings, environ: Mapping[str, str]
) -> tuple[tuple[ProcessSpec, ...], dict, dict[str, int]]:
    """Size web and worker from the memory limit and pass the counts through each tool's own
    knob; never override what the user set. Returns the specs, the resource facts with the
    reasoning (for --dry-run and the WebSizer), and the watchdog thresholds per worker."""
    from supervisor.settings import ConfigError

    limit, limit_source = resources.memory_limit()
    cpus, cpu_source = resources.cpu_limit()
    bounded = limit_source.startswith("cgroup")
    info = {
        "memory_limit": limit,
        "memory_source": limit_source,
        "memory_bounded": bounded,
        "cpus": round(cpus, 3),
        "cpu_source": cpu_source,
        "sizing": settings.sizing,
        "reasons": [],
        "estimates_mib": dict(ESTIMATES),
        "adaptive": None,
    }
    web = next((s for s in specs if s.role == "web" and s.kind in WEB_KINDS), None)
    worker = next((s for s in specs if s.role == "worker" and s.kind in WORKER_KINDS), None)
    if web is not None and "WEB_CONCURRENCY" in environ:  # read by them even with -w, sizing off
        _count(environ["WEB_CONCURRENCY"], "WEB_CONCURRENCY")
    if settings.sizing == "auto" and (web or worker):
        web_n, web_set = _explicit_web(web, environ) if web else (None, False)
        worker_n, worker_set = _explicit_worker(worker, settings) if worker else (None, False)
        result = size(
            limit, cpus, web_n, worker_n, web is not None, _worker_kind(worker, settings),
            memory_bounded=bounded,
        )
        info["reasons"] = result["reasons"]
        if not result["fits"]:
            raise ConfigError(
                f"the processes do not fit in memory ({limit_source}): {result['error']}; "
                "lower WEB_CONCURRENCY / START_ALL_WORKER_CONCURRENCY, raise the limit, "
                "or set START_ALL_SIZING=off"
            )
        info["web_concurrency"] = result["web"] if web else None
        info["worker_concurrency"] = result["worker"] if worker else None
        # only when the pid we signal is gunicorn's master: to a shell, SIGTTIN means "stop"
        if web is not None and not web_set and web.kind in ADAPTIVE_KINDS and _execs(web):
            start = min(ADAPTIVE_START, result["web"])
            info["adaptive"] = {
                "instance": web.instance,
                "start": start,
                "max": cpu_caps(cpus, bounded)[0],
                "limit": limit,
                "headroom_share": ESTIMATES["headroom_share"],
                "reserve": result["worker_mib"] * MB,  # the worker's estimate, until measured
            }
            info["reasons"].append(
                f"web: starts with {start}, then grows to at most {info['adaptive']['max']} "
                "while the measured workers fit (SIGTTIN/SIGTTOU)"
            )
            result = {**result, "web": start}
        worker_budget = (ESTIMATES["worker_per_unit"] + ESTIMATES["worker_base"]) * MB
        max_rss_mb = settings.worker_max_rss_mb or worker_budget // MB
        specs = tuple(
            _with_sizing(s, web, worker, result, web_set, worker_set, max_rss_mb)
            for s in specs
        )
    watch: dict[str, int] = {}
    if settings.watchdog_share > 0 or settings.watchdog_mb:
        threshold = (
            settings.watchdog_mb * MB
            if settings.watchdog_mb
            else int(limit * settings.watchdog_share)
        )
        watch = {s.instance: threshold for s in specs if s.role == "worker"}
    return specs, info, watch


def _with_sizing(spec, web, worker, result, web_set, worker_set, max_rss_mb) -> ProcessSpec:
    from dataclasses import replace

    from supervisor import commands, profiles

    if spec is web and not web_set:
        # gunicorn and uvicorn both read WEB_CONCURRENCY as their default worker count
        return replace(spec, env={**spec.env, "WEB_CONCURRENCY": str(result["web"])})
    if spec is not worker:
        return spec
    env = dict(spec.env)
    if not worker_set:
        env["START_ALL_WORKER_CONCURRENCY"] = str(result["worker"])
    if spec.kind == "qcluster":
        # Q_CLUSTER lives in the user's settings: they read these (supervisor.contrib.django)
        env.setdefault("START_ALL_WORKER_MAX_RSS_MB", str(max_rss_mb))
        return replace(spec, env=env)
    words = commands.parse(spec.command).program
    # a native worker line under USE_DB_QUEUE=false has celery's stop profile, but its own
    # options: it passes START_ALL_WORKER_CONCURRENCY on to the celery it execs
    if spec.kind == "celery-worker" and profiles.detect(words).kind == "celery-worker":
        extra = []
        if _option(words, "-c", "--concurrency") is None:
            # also when START_ALL_WORKER_CONCURRENCY set it: celery itself does not read it
            extra += ["--concurrency", str(result["worker"])]
        if _option(words, None, "--max-memory-per-child") is None:
            extra += ["--max-memory-per-child", str(max_rss_mb * 1024)]  # KiB
        command = commands.parse(f"{spec.command} {' '.join(extra)}") if extra else None
        if command is not None and command.execs:
            return replace(spec, env=env, argv=command.argv, command=f"{spec.command} "
                           f"{' '.join(extra)}")
    return replace(spec, env=env)


# ----- 2. after start: the web worker count from measurement (inside PID 1) ----------------------

STABLE = 0.05  # two measurements this close (share) in a row: the workers have loaded the app
SYNC_TIMEOUT = 120.0  # not at the count asked by then (a slow boot is slower): its config wins
RESYNC_AFTER = 10.0  # fewer workers than asked this long after a change: gunicorn reset
GROW_MARGIN = 1.05  # another worker must fit with 5 % to spare (no flapping at the boundary)


def worker_pids(master: int) -> list[int]:
    """The live (not zombie) children of a gunicorn master: its workers."""
    try:
        tids = os.listdir(f"/proc/{master}/task")
    except OSError:
        return []
    children: list[int] = []
    for tid in tids:
        children += [int(p) for p in (resources._read(f"/proc/{master}/task/{tid}/children")
                                      or "").split()]
    alive = []
    for pid in children:
        stat = resources._read(f"/proc/{pid}/stat") or ""
        if stat and stat.rsplit(") ", 1)[-1][:1] != "Z":
            alive.append(pid)
    return alive


class WebSizer:
    """Grows or shrinks an adaptive gunicorn one worker at a time, from measured PSS.

    Runs in its own thread; it never signals anything itself: it asks the loop
    (`runtime.request_signal`), which owns the children. `state` is replaced whole on each
    check, for the health server to read without a lock.
    """

    def __init__(self, runtime, options: dict, interval: float) -> None:
        self.runtime = runtime
        self.instance = options["instance"]
        self.start_count = int(options["start"])
        self.max_count = int(options["max"])
        self.limit = int(options["limit"])
        self.headroom = float(options["headroom_share"])
        self.reserve = int(options["reserve"])
        self.interval = max(interval, 1.0)
        self.pid: int | None = None
        self.wanted = self.start_count
        self.changed_at = 0.0
        self.last_per_worker = 0
        self.adapting = True
        self.state: dict = {"instance": self.instance, "state": "waiting for the web process",
                            "workers": None, "wanted": None, "max": self.max_count}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="start-all-sizing", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick(time.monotonic())
            except Exception as error:  # a bug here must not take health reporting down
                self.state = {**self.state, "state": f"error ({type(error).__name__})"}

    def tick(self, now: float) -> None:
        snapshot = self.runtime.snapshot
        web = next((p for p in snapshot["processes"] if p["name"] == self.instance), None)
        if web is None or web["state"] != "running" or not web["pid"]:
            self.pid = None
            self.state = {**self.state, "state": "waiting for the web process", "workers": None}
            return
        if web["pid"] != self.pid:  # a new run starts with the planned count again
            self.pid, self.wanted, self.changed_at, self.adapting = (
                web["pid"], self.start_count, now, True)
        workers = worker_pids(self.pid)
        sizes = [resources.tree_memory(pid)["pss"] for pid in workers]
        master = (resources.process_memory(self.pid) or (0, 0))[1]
        others = sum(resources.tree_memory(p["pid"])["pss"] for p in snapshot["processes"]
                     if p["pid"] and p["name"] != self.instance and p["state"] == "running")
        supervisor = (resources.process_memory(os.getpid()) or (0, 0))[1]
        # the worker's side is at least its estimate: it grows when tasks run
        budget = int(self.limit * (1 - self.headroom)) - supervisor - max(others, self.reserve)
        budget -= master
        per_worker = max(sizes) if sizes else 0
        room = max(1, min(self.max_count, budget // per_worker)) if per_worker else None
        base = {
            "instance": self.instance, "workers": len(workers), "wanted": self.wanted,
            "max": self.max_count, "room": room, "per_worker_pss": per_worker,
            "master_pss": master, "others_pss": others, "budget": budget,
            "limit": self.limit,
        }
        if not self.adapting:
            self.state = {**base, "state": "off: gunicorn's own configuration sets the count"}
            return
        if 1 <= len(workers) < self.wanted and now - self.changed_at > RESYNC_AFTER:
            # fewer than asked long after our last signal (gunicorn forks at once): it was
            # reloaded (SIGHUP resets it to WEB_CONCURRENCY) or lost a worker; go on from there
            self.wanted, self.changed_at = len(workers), now
            base["wanted"] = self.wanted
        if len(workers) != self.wanted:
            if now - self.changed_at > SYNC_TIMEOUT:
                self.adapting = False  # e.g. `workers = 4` in gunicorn.conf.py: theirs wins
                self.state = {**base, "state": "off: gunicorn's own configuration sets the count"}
            else:
                self.state = {**base, "state": f"waiting for {self.wanted} workers"}
            return
        # the largest worker counts: one still importing its app does not lower the figure
        stable = per_worker and abs(per_worker - self.last_per_worker) <= STABLE * per_worker
        self.last_per_worker = per_worker
        if not stable:
            self.state = {**base, "state": "measuring"}
            return
        if self.wanted < self.max_count and budget >= (self.wanted + 1) * per_worker * GROW_MARGIN:
            self._ask("SIGTTIN", self.wanted + 1, per_worker, budget, now)
            self.state = {**base, "wanted": self.wanted, "state": "growing"}
        elif self.wanted > 1 and budget < self.wanted * per_worker:
            self._ask("SIGTTOU", self.wanted - 1, per_worker, budget, now)
            self.state = {**base, "wanted": self.wanted, "state": "shrinking"}
        else:
            why = "CPU cap" if self.wanted >= self.max_count else "memory"
            self.state = {**base, "state": f"steady ({why})"}

    def _ask(self, signame: str, count: int, per_worker: int, budget: int, now: float) -> None:
        reason = (f"sizing: {self.wanted} -> {count} web workers ({per_worker // MB} MiB each "
                  f"measured, {budget // MB} MiB for them, CPU cap {self.max_count})")
        self.runtime.request_signal(self.instance, self.pid, signame, reason)
        self.wanted, self.changed_at = count, now
