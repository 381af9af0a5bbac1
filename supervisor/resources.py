"""What the container may use (memory and CPU limits) and what a process tree uses.
How many web and worker processes fit is `sizing.py`.

Standard library only: PID 1 imports this for the tree memory of its children. Measured on
this project's machine (python -S, /proc/PID/status VmRSS): importing psutil costs PID 1
4.4 MB (8.4 -> 12.8 MB), more than the whole health server; the few /proc files read here
give the same numbers for nothing.

Limits, in the order they are tried:
- cgroup v2: `memory.max` / `cpu.max` of our cgroup and its ancestors (the smallest wins);
- cgroup v1: `memory.limit_in_bytes` / `cpu.cfs_quota_us` + `cpu.cfs_period_us`, same walk;
- otherwise the host: MemTotal from /proc/meminfo and the CPUs we may run on.
"""

from __future__ import annotations

import os

MB = 1024 * 1024
UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63

# ----- limits ------------------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _cgroup_paths(proc_cgroup: str) -> dict[str, str]:
    """controller -> path inside its hierarchy; "" is the v2 unified hierarchy."""
    paths: dict[str, str] = {}
    text = _read(proc_cgroup) or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def _ancestors(mount: str, path: str) -> list[str]:
    """Our cgroup directory and each parent up to the mount: a parent's limit applies too."""
    parts = [p for p in path.split("/") if p]
    dirs = [os.path.join(mount, *parts[:i]) for i in range(len(parts), -1, -1)]
    return [d for d in dirs if os.path.isdir(d)]


def _v2_dir(root: str) -> str | None:
    """Where the unified hierarchy with the memory controller is mounted, if anywhere."""
    for mount in (root, os.path.join(root, "unified")):
        controllers = _read(os.path.join(mount, "cgroup.controllers"))
        if controllers is not None and "memory" in controllers.split():
            return mount
    return None


def memory_limit(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup",
                 meminfo: str = "/proc/meminfo") -> tuple[int, str]:
    """(bytes, where it came from): the smallest cgroup limit, else the host's RAM."""
    paths = _cgroup_paths(proc_cgroup)
    v2 = _v2_dir(root)
    found: list[int] = []
    if v2 is not None and "" in paths:
        for directory in _ancestors(v2, paths[""]):
            value = _read(os.path.join(directory, "memory.max"))
            if value and value != "max":
                found.append(int(value))
        if found:
            return min(found), "cgroup v2 memory.max"
    if "memory" in paths:
        mount = os.path.join(root, "memory")
        for directory in _ancestors(mount, paths["memory"]):
            value = _read(os.path.join(directory, "memory.limit_in_bytes"))
            if value and value.lstrip("-").isdigit() and 0 < int(value) < UNLIMITED:
                found.append(int(value))
        if found:
            return min(found), "cgroup v1 memory.limit_in_bytes"
    for line in (_read(meminfo) or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024, "host RAM (no cgroup memory limit)"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "host RAM"


def cpu_limit(root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> tuple[
    float, str
]:
    """(CPUs, where it came from): a cgroup quota, else the CPUs this process may run on."""
    paths = _cgroup_paths(proc_cgroup)
    quotas: list[float] = []
    unified = None
    for mount in (root, os.path.join(root, "unified")):
        controllers = _read(os.path.join(mount, "cgroup.controllers"))
        if controllers is not None and "cpu" in controllers.split():
            unified = mount
            break
    if unified is not None and "" in paths:
        for directory in _ancestors(unified, paths[""]):
            value = (_read(os.path.join(directory, "cpu.max")) or "").split()
            if len(value) == 2 and value[0] != "max":
                quotas.append(int(value[0]) / int(value[1]))
        if quotas:
            return min(quotas), "cgroup v2 cpu.max"
    controller = "cpu" if "cpu" in paths else "cpu,cpuacct" if "cpu,cpuacct" in paths else None
    if controller:
        for mount_name in ("cpu", "cpu,cpuacct"):
            mount = os.path.join(root, mount_name)
            if not os.path.isdir(mount):
                continue
            for directory in _ancestors(mount, paths[controller]):
                quota = _read(os.path.join(directory, "cpu.cfs_quota_us"))
                period = _read(os.path.join(directory, "cpu.cfs_period_us"))
                if quota and period and int(quota) > 0 and int(period) > 0:
                    quotas.append(int(quota) / int(period))
            break
        if quotas:
            return min(quotas), "cgroup v1 cpu.cfs_quota_us"
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return float(count), "host CPUs (no cgroup CPU quota)"


# ----- process trees -----------------------------------------------------------------------------


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants, from /proc/PID/task/TID/children (no full /proc scan)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            text = _read(f"/proc/{current}/task/{tid}/children")
            if text:
                todo.extend(int(p) for p in text.split())
    return pids


def process_memory(pid: int) -> tuple[int, int] | None:
    """(RSS, PSS) in bytes of one process; PSS shares pages between forked workers fairly."""
    text = _read(f"/proc/{pid}/smaps_rollup")
    if not text:  # gone, a zombie (empty), or a kernel without smaps_rollup (None)
        statm = _read(f"/proc/{pid}/statm") if text is None else None
        rss = int(statm.split()[1]) * os.sysconf("SC_PAGE_SIZE") if statm else 0
        return (rss, rss) if rss else None
    rss = pss = 0
    for line in text.splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Pss:"):
            pss = int(line.split()[1]) * 1024
    return rss, pss


def tree_memory(pid: int) -> dict:
    """Memory of a process and its descendants: summed RSS, summed PSS, live process count
    (zombies hold no memory and are not counted).

    The watchdog compares PSS: a forked worker's copy-on-write pages are counted once, as the
    kernel's memory cgroup counts them, while summed RSS would count them once per process.
    """
    rss = pss = count = 0
    for member in tree_pids(pid):
        usage = process_memory(member)
        if usage:
            rss += usage[0]
            pss += usage[1]
            count += 1
    return {"rss": rss, "pss": pss, "processes": count}
