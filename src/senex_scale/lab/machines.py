"""Several booted Debian 13 machines on a private bridge: the multi-host lab (issue 15).

The host lab (``scripts/hostlab``, docs/hostlab.md) is one machine on the host's network. This
module boots several copies of its cached root filesystem, each a real host of its own: its
systemd as PID 1, its own network namespace with one address on a Linux bridge, its own sshd
with its own host key, its own Podman storage::

    root network namespace (this host)                 machine namespaces
    ----------------------------------                 ------------------
    lo 127.0.0.1
    senexlab0 10.77.0.1/24  (a bridge; LabNet)
      +-- vb-lb     <== veth ==>  host0 10.77.0.10/24   lb     systemd, sshd :22, HAProxy
      +-- vb-web01  <== veth ==>  host0 10.77.0.11/24   web01  systemd, sshd :22, Podman
      +-- vb-web02  <== veth ==>  host0 10.77.0.12/24   web02  systemd, sshd :22, Podman

Nothing routes out: the machines have no default route, so they can only send to the /24
(a connect to any other address fails at once with "Network is unreachable", no packet
sent); the host adds no NAT and no route but the bridge's own /24; no DNS server is
configured in the machines (the lab's names are in their ``/etc/hosts``, the host is
``labhost``). All traffic stays on loopback and the bridge, IPv4 only (IPv6 is off on the
bridge, the host's veth ends and ``host0``).

Why each piece is the way it is:

- **Root filesystem: overlayfs over the cached rootfs**, read-only lower, upper and work dirs
  per machine in the lab's temporary directory: a machine costs its own writes, not 770 MB,
  and starts in a fraction of a second. Podman's overlay storage cannot have its upper dir on
  overlayfs, so each machine gets **a real-directory copy of /var/lib/containers** (``cp -a``,
  about 280 MB, under a second when the cache is warm) bind-mounted over the overlay's. A full
  ``cp -a`` of the rootfs per machine was not needed.
- **Booted with** ``systemd-nspawn -b --private-network --network-bridge=BRIDGE`` in its own
  session, without machined or a host systemd (``--register=no --keep-unit``), like the single
  lab. With ``--keep-unit`` systemd-nspawn puts the container under ``payload/`` of the
  cgroup it was started in: two machines started from one process would share one cgroup
  tree, and one machine's systemd would kill the other's services. So each machine is started
  in a cgroup of its own, ``senex-lab-BRIDGE-NAME``, in the cgroup v2 hierarchy (mounted in
  the lab's directory when the host has it nowhere, as on a cgroup v1 host) and in v1's
  ``name=systemd`` where there is one. ``cgroup.kill`` on it is the power cut, and the tree
  is removed after every stop (a boot into the old, empty tree had its early services
  SIGKILLed as they started).
- **Address**: a oneshot unit ``senex-lab-address.service`` in the machine's root puts
  ``SUBNET.INDEX/24`` on ``host0`` (no DHCP, no gateway); it is part of the machine's own
  boot, so ``boot_again`` brings the same address back.
- **ssh**: the packaged ``ssh.service`` (masked in the lab's rootfs, which shares the host's
  port 22) is unmasked in the machine's upper layer; the machine's only host key is an ed25519
  key made for it (the rootfs's keys, the same in every copy, are deleted in the machine);
  root logs in with the lab's client key; ``LabNet.known_hosts`` pins every machine's key.
- **Podman** in a machine runs containers with ``--network=host --cgroups=disabled`` (as the
  single lab's Quadlet units do): the rootfs has no ``nft`` for netavark's bridge network, and
  crun cannot make its cgroups here; the containers answer on the machine's address.

Kernel needs: bridge (``CONFIG_BRIDGE``), veth (``CONFIG_VETH``), overlayfs
(``CONFIG_OVERLAY_FS``), network, PID and mount namespaces, cgroups; root. ``check_host``
says what is missing (``MachinesUnavailableError``: this host cannot run the machines;
tests skip on it). With ``br_netfilter`` calling iptables for bridged traffic and an
iptables FORWARD chain that could drop it, ``LabNet`` inserts one ACCEPT rule for its own
bridge (``-i BRIDGE -o BRIDGE``) and deletes it on ``close`` (this host: no filter table
loaded, no iptables program, so no rule).

Lifetime: ``LabNet`` holds a lock file per bridge name for as long as it exists (a second lab
on the same bridge name waits up to ``wait`` seconds, then fails). Whatever a lab killed
outright leaves behind (machines still running, mounts, cgroups, the bridge, its temporary
directory) is removed by the next ``LabNet`` of the same bridge name: it can only be a
leftover, since its owner no longer holds the lock. A bridge of that name that this module did
not create (its alias does not say so) is never touched.

The lower layer is the shared cache: ``scripts/hostlab build`` must not rebuild it while
machines are up, and files the single lab writes into its rootfs (tests write Quadlet files
there) show through in the machines until a machine writes its own copy.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import gzip
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import psutil

from senex_scale.errors import PermanentError, TemporaryError
from senex_scale.lab.base import LabError, tail
from senex_scale.runtimes.transport import Completed, NsenterTransport, run

__all__ = [
    "BRIDGE",
    "LAB",
    "SUBNET",
    "LabNet",
    "Machine",
    "MachinesUnavailableError",
    "check_host",
    "lab_machines",
]

LAB = Path(os.environ.get("SENEX_HOSTLAB_DIR", "/var/cache/senex-scale/hostlab"))
"""The single host lab's cache (``scripts/hostlab``); its ``rootfs/`` is every machine's lower
layer."""
BRIDGE = "senexlab0"
SUBNET = "10.77.0"
"""The first three octets of the lab's /24: the bridge is .1, machine ``index`` is .index."""
MARK = "senex-scale lab"
"""The bridge's alias starts with this: how a leftover of this module is told from a bridge
someone else made."""
PREFIX = "senex-lab-"
"""Temporary directories, lock files and cgroups of a lab: ``senex-lab-BRIDGE...``."""
ROOTFS_NEEDS = (
    "sbin/init",
    "usr/sbin/sshd",
    "usr/bin/podman",
    "usr/sbin/haproxy",
    "usr/sbin/ip",
    "var/lib/containers/storage",
)
"""What the machines use from the lab's rootfs; an older recipe lacks haproxy."""
BOOT_TIMEOUT = 120.0
"""Seconds from systemd-nspawn to ssh answering: a machine takes 1-2 s here (three in
parallel on 2 cores), so this only bounds a boot that hangs."""
STOP_TIMEOUT = 30.0
"""Seconds a clean shutdown may take before it becomes a power cut (as ``scripts/hostlab``)."""
_NAME = re.compile(r"[a-z][a-z0-9-]{0,11}")
"""A machine name: a hostname that keeps ``vb-NAME`` within Linux's 15 characters (longer
names make systemd-nspawn hash the interface name)."""
_BRIDGE_NAME = re.compile(r"[a-z][a-z0-9]{0,14}")
_UP_STATES = ("running", "degraded")
_HELD: set[str] = set()
"""Bridge names a LabNet of this process holds: a second one here would wait on its own
lock (flock is per open file), so it fails at once instead."""
_HELD_GUARD = threading.Lock()


class MachinesUnavailableError(LabError):
    """This host cannot run the lab's machines (not root, a kernel feature or a program
    missing, the host lab not built): the tests skip with this message."""


# --------------------------------------------------------------------------- small helpers


def _run(argv: Sequence[str], what: str, timeout: float = 60.0) -> str:
    """Run a host command; its stdout, or ``LabError`` naming ``what`` and its stderr."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise LabError(f"{what}: {argv[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{what}: {shlex.join(argv)} did not finish within {timeout:g}s") from None
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip()
        raise LabError(f"{what}: {shlex.join(argv)} failed ({done.returncode}): {message}")
    return done.stdout


def _ip(*args: str) -> str:
    return _run(["ip", *args], f"ip {' '.join(args[:3])}")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _mounts_under(path: Path) -> list[Path]:
    """Mount points at or under ``path`` (from /proc/self/mountinfo), deepest first."""
    found: list[Path] = []
    prefix = str(path).rstrip("/")
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def _unmount_all(path: Path) -> None:
    """Unmount everything mounted at or under ``path``; ``LabError`` if something stays."""
    for point in _mounts_under(path):
        done = subprocess.run(["umount", str(point)], capture_output=True, text=True, check=False)
        if done.returncode != 0 and point in _mounts_under(point):
            time.sleep(0.5)
            subprocess.run(["umount", str(point)], capture_output=True, check=False)
    left = _mounts_under(path)
    if left:
        raise LabError(f"cannot unmount {', '.join(map(str, left))} (still busy)")


def _remove_tree(path: Path) -> None:
    """``rm -rf path``, but never through a mount point (a mounted rootfs or cgroupfs)."""
    if not path.exists():
        return
    _unmount_all(path)
    shutil.rmtree(path)


def _safe_path(root: Path, inside: str) -> Path:
    """``root/inside`` with no symlink on the way to its parent: an absolute symlink in the
    machine's root would otherwise lead a write from the host into the host's own files."""
    parts = Path(inside.lstrip("/")).parts
    if not parts or ".." in parts:
        raise LabError(f"{inside!r} is not a path inside the machine")
    parent = root
    for part in parts[:-1]:
        parent = parent / part
        if parent.is_symlink():
            raise LabError(f"{inside}: {parent} is a symlink; not writing through it")
        parent.mkdir(mode=0o755, exist_ok=True)
    return parent / parts[-1]


def _write(root: Path, inside: str, text: str, mode: int = 0o644) -> Path:
    """Write ``text`` to ``inside`` of the tree at ``root``, replacing whatever was there (a
    symlink is replaced, never followed)."""
    path = _safe_path(root, inside)
    if path.is_symlink() or path.exists():
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, mode)
    return path


def _keygen(path: Path, comment: str) -> Path:
    """An ed25519 key pair without passphrase at ``path`` and ``path.pub`` (kept if there)."""
    if not path.exists():
        _run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            f"ssh-keygen for {comment}",
        )
    return path


# --------------------------------------------------------------------------- the host


def _kernel_config() -> str:
    with contextlib.suppress(OSError):
        return gzip.decompress(Path("/proc/config.gz").read_bytes()).decode(errors="replace")
    with contextlib.suppress(OSError):
        return Path(f"/boot/config-{os.uname().release}").read_text(errors="replace")
    return ""


def _kernel_has(option: str, module: str, config: str) -> bool:
    """Built in, loaded, or loadable now (``modprobe``)."""
    if re.search(rf"^{option}=y$", config, re.MULTILINE) or Path(f"/sys/module/{module}").exists():
        return True
    if shutil.which("modprobe") is None:
        return False
    probe = subprocess.run(["modprobe", module], capture_output=True, check=False)
    return probe.returncode == 0


def _rootfs_problems(lab: Path) -> list[str]:
    rootfs = lab / "rootfs"
    missing = [need for need in ROOTFS_NEEDS if not (rootfs / need).exists()]
    if not (lab / "built").exists() or missing:
        what = f"no {', '.join(missing)} in {rootfs}" if missing else f"no {lab / 'built'}"
        return [
            f"the host lab at {lab} is not built, or by an older recipe ({what}): "
            "run scripts/hostlab build"
        ]
    return []


def check_host(lab: Path = LAB) -> None:
    """``MachinesUnavailableError`` listing every reason this host cannot run the machines."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("needs root (bridge, mounts, systemd-nspawn, nsenter)")
    for program, package in [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("ip", "iproute2"),
        ("ssh", "openssh-client"),
        ("ssh-keygen", "openssh-client"),
        ("mount", "mount"),
    ]:
        if shutil.which(program) is None:
            problems.append(f"{program} is not installed (Debian package {package})")
    config = _kernel_config()
    for option, module, what in [
        ("CONFIG_BRIDGE", "bridge", "Linux bridges"),
        ("CONFIG_VETH", "veth", "veth pairs"),
        ("CONFIG_OVERLAY_FS", "overlay", "overlayfs"),
    ]:
        if not _kernel_has(option, module, config):
            problems.append(f"the kernel has no {what} ({option}, module {module})")
    if not Path("/proc/self/ns/net").exists():
        problems.append("the kernel has no network namespaces (CONFIG_NET_NS)")
    problems += _rootfs_problems(lab)
    if problems:
        raise MachinesUnavailableError("cannot run the lab's machines here: " + "; ".join(problems))


# --------------------------------------------------------------------------- cgroups


def _cgroup_parents(private_mount: Path) -> list[Path]:
    """This process's cgroup directory in the cgroup v2 hierarchy (mounted at
    ``private_mount`` when the host has it nowhere; unmounted with the lab's directory) and
    in v1's ``name=systemd`` where there is one: each machine's cgroups are made under them."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        ident, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if ident == "0" and controllers == "":
            own["v2"] = path
        elif "name=systemd" in controllers.split(","):
            own["v1"] = path
    mounts: dict[str, tuple[Path, str]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3]
        if fstype == "cgroup2":
            mounts.setdefault("v2", (Path(fields[4]), fields[3]))
        elif fstype == "cgroup" and "name=systemd" in options.split(","):
            mounts.setdefault("v1", (Path(fields[4]), fields[3]))
    if "v2" in own and "v2" not in mounts:
        private_mount.mkdir(parents=True, exist_ok=True)
        _run(["mount", "-t", "cgroup2", "cgroup2", str(private_mount)], "mount cgroup2")
        mounts["v2"] = (private_mount, "/")
    found = []
    for kind in ("v2", "v1"):
        if kind not in own or kind not in mounts:
            continue
        point, root = mounts[kind]
        relative = os.path.relpath(own[kind], root)
        if relative.startswith(".."):
            continue  # this process's cgroup is outside the mounted subtree
        found.append((point / relative).resolve())
    return found


def _cgroup_pids(path: Path) -> set[int]:
    pids: set[int] = set()
    for directory, _, files in os.walk(path):
        if "cgroup.procs" in files:
            for text in _read(Path(directory) / "cgroup.procs").split():
                pids.add(int(text))
    return pids


def _kill_cgroup(path: Path, timeout: float = 15.0) -> None:
    """Kill every process in the cgroup tree at ``path`` (``cgroup.kill`` on v2 when the
    kernel has it, SIGKILL to each process otherwise) and wait until it is empty."""
    if not path.is_dir():
        return
    if (path / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            (path / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout
    while pids := _cgroup_pids(path):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise LabError(f"cgroup {path}: processes {sorted(pids)} survive SIGKILL")
        time.sleep(0.05)


def _remove_cgroup(path: Path, timeout: float = 10.0) -> None:
    """rmdir the cgroup tree at ``path``, deepest first (a dying cgroup may be busy a moment)."""
    deadline = time.monotonic() + timeout
    while path.is_dir():
        for directory, _, _ in sorted(os.walk(path), key=lambda w: -len(Path(w[0]).parts)):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        if not path.is_dir():
            return
        if time.monotonic() > deadline:
            raise LabError(f"cannot remove cgroup {path} (still busy)")
        time.sleep(0.1)


# --------------------------------------------------------------------------- the network


class LabNet:
    """The lab's bridge ``name`` with ``SUBNET.1/24`` in the root network namespace, and
    what the lab's machines share: a temporary directory, the client key root logs in with,
    the known_hosts file pinning every machine's host key, the cgroups they run in.

    ``create()`` (or ``with``) makes it; ``close()`` closes the machines still registered,
    then deletes the bridge, the FORWARD rule if one was needed, the cgroups and the
    directory. Both are idempotent. ``wait``: seconds to wait for another lab holding the
    same bridge name."""

    def __init__(
        self,
        name: str = BRIDGE,
        subnet: str = SUBNET,
        *,
        lab: Path = LAB,
        wait: float = 0.0,
        workdir: Path | None = None,
    ) -> None:
        if not _BRIDGE_NAME.fullmatch(name):
            raise LabError(f'"{name}" is not a bridge name for the lab (a-z0-9, <= 15 chars)')
        try:
            network = ipaddress.IPv4Network(f"{subnet}.0/24")
        except ValueError:
            raise LabError(f'"{subnet}" is not the first three octets of an IPv4 /24') from None
        if not network.is_private or network.overlaps(ipaddress.IPv4Network("127.0.0.0/8")):
            raise LabError(f"{network} is not a private network outside loopback")
        self.name = name
        self.subnet = subnet
        self.network = network
        self.lab = lab
        self.wait = wait
        self.workdir = Path(workdir or tempfile.gettempdir())
        self.machines: dict[str, Machine] = {}
        self._lock_file: IO[str] | None = None
        self._dir: Path | None = None
        self._forward_rule: list[str] | None = None
        self._cgroup_parents: list[Path] = []
        self.lock_wait = 0.0
        """Seconds ``create()`` waited for another lab on the same bridge to end."""
        self._guard = threading.Lock()
        self._hosts_lock = threading.Lock()
        self._pins: dict[str, str] = {}

    def __repr__(self) -> str:
        state = "up" if self._dir is not None else "down"
        return f"<LabNet {self.name} {self.address}/24 {state}>"

    # ------------------------------------------------------------------ what callers read

    @property
    def address(self) -> str:
        """The host's own address on the bridge (``SUBNET.1``)."""
        return f"{self.subnet}.1"

    def address_of(self, index: int) -> str:
        """The address of machine ``index`` (2..254)."""
        if not 2 <= index <= 254:
            raise LabError(f"machine index {index} is outside 2..254 ({self.subnet}.1 is the host)")
        return f"{self.subnet}.{index}"

    @property
    def rootfs(self) -> Path:
        return self.lab / "rootfs"

    @property
    def dir(self) -> Path:
        """The lab's temporary directory (machines' layers, keys, console logs)."""
        if self._dir is None:
            raise LabError(f"lab network {self.name} is not created (LabNet.create())")
        return self._dir

    @property
    def client_key(self) -> Path:
        """The private key root logs in to every machine with (``.pub`` beside it)."""
        return self.dir / "client_key"

    @property
    def known_hosts(self) -> Path:
        """Every machine's host key, by address (``UserKnownHostsFile=``)."""
        return self.dir / "known_hosts"

    @property
    def created(self) -> bool:
        return self._dir is not None

    # ------------------------------------------------------------------ life cycle

    def create(self) -> Self:
        """Make the bridge and the lab's directory (a no-op when this object already did)."""
        if self._dir is not None:
            return self
        check_host(self.lab)
        self._lock()
        try:
            self._dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{self.name}-", dir=self.workdir))
            self._dir.chmod(0o755)
            self._save_state()
            self._cgroup_parents = _cgroup_parents(self._dir / "cgroup2")
            self._sweep_leftovers()
            self._claim_bridge()
            self._check_subnet_free()
            self._make_bridge()
            self._forward_rule = self._allow_forwarding()
            _keygen(self.client_key, f"senex-lab-{self.name}-client")
            self.known_hosts.write_text("")
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Close every machine, then delete the bridge, the FORWARD rule, the cgroup mount,
        the directory; release the lock. Every step is tried; ``LabError`` lists failures."""
        errors: list[str] = []
        for machine in list(self.machines.values()):
            try:
                machine.close()
            except Exception as exc:  # every step is tried, all reported
                errors.append(f"machine {machine.name}: {exc}")
        if self._lock_file is not None:
            for step in (self._delete_bridge, self._drop_forward_rule, self._remove_dir):
                try:
                    step()
                except Exception as exc:
                    errors.append(str(exc))
            self._lock_file.close()
            self._lock_file = None
            with _HELD_GUARD:
                _HELD.discard(self.name)
        if errors:
            raise LabError(f"lab network {self.name}: teardown failed: " + "; ".join(errors))

    def __enter__(self) -> Self:
        return self.create()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ for machines

    def register(self, machine: Machine) -> None:
        with self._guard:
            for other in self.machines.values():
                if other.name == machine.name or other.index == machine.index:
                    raise LabError(
                        f"machine {machine.name} ({machine.address}) clashes with "
                        f"{other.name} ({other.address}) on {self.name}"
                    )
            self.machines[machine.name] = machine

    def forget(self, machine: Machine) -> None:
        with self._guard:
            self.machines.pop(machine.name, None)

    def pin(self, address: str, public_key: str) -> None:
        """Record ``address``'s host key (an ``ssh-ed25519 AAAA... comment`` line)."""
        with self._guard:
            self._pins[address] = public_key.strip()
            lines = [f"{a} {key}" for a, key in sorted(self._pins.items())]
            tmp = self.known_hosts.with_suffix(".tmp")
            tmp.write_text("\n".join(lines) + "\n")
            tmp.replace(self.known_hosts)

    def hosts_file(self) -> str:
        """``/etc/hosts`` for the machines: loopback, the host, every machine by name."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines.append(f"{self.address}\tlabhost")
        with self._guard:
            machines = sorted(self.machines.values(), key=lambda m: m.index)
        lines += [f"{m.address}\t{m.name}" for m in machines]
        return "\n".join(lines) + "\n"

    def publish_hosts(self) -> None:
        """Write ``hosts_file()`` into every machine whose root is mounted: a machine added
        later is known by name to those already up."""
        text = self.hosts_file()
        with self._hosts_lock:
            for machine in list(self.machines.values()):
                if _mounts_under(machine.root):
                    machine.write_file("/etc/hosts", text)

    def cgroups_for(self, machine: str) -> list[Path]:
        """The machine's own cgroup in each hierarchy (created; recorded for a later sweep)."""
        paths = []
        for parent in self._cgroup_parents:
            path = parent / f"{PREFIX}{self.name}-{machine}"
            try:
                path.mkdir(exist_ok=True)
            except OSError as exc:
                raise LabError(f"machine {machine}: cannot make cgroup {path}: {exc}") from exc
            paths.append(path)
        self._save_state()
        return paths

    def cgroup_paths(self, machine: str) -> list[Path]:
        return [h / f"{PREFIX}{self.name}-{machine}" for h in self._cgroup_parents]

    # ------------------------------------------------------------------ the lock

    def _lock(self) -> None:
        with _HELD_GUARD:
            if self.name in _HELD:
                raise LabError(
                    f"bridge {self.name} is already held by another LabNet of this process: "
                    f"share its machines (one fixture) or close it first"
                )
            _HELD.add(self.name)
        try:
            self._flock()
        except BaseException:
            with _HELD_GUARD:
                _HELD.discard(self.name)
            raise

    def _flock(self) -> None:
        path = Path(self.workdir) / f"{PREFIX}{self.name}.lock"
        handle = path.open("a")
        started = time.monotonic()
        deadline = started + self.wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.close()
                    raise LabError(
                        f"another lab holds bridge {self.name} ({path}); waited {self.wait:g}s"
                    ) from None
                time.sleep(1)
        self.lock_wait = time.monotonic() - started
        self._lock_file = handle

    # ------------------------------------------------------------------ the bridge

    def _bridge_alias(self) -> str | None:
        """The bridge's alias, or None when there is no such interface."""
        path = Path("/sys/class/net") / self.name
        if not path.exists():
            return None
        return _read(path / "ifalias")

    def _claim_bridge(self) -> None:
        """Refuse an interface of that name the lab did not make; delete our own leftover
        (we hold its lock: no live lab uses it)."""
        alias = self._bridge_alias()
        if alias is None:
            return
        if not alias.startswith(MARK):
            raise LabError(
                f"interface {self.name} exists and was not made by the lab (alias "
                f"{alias!r}): not touching it; choose another bridge name"
            )
        _ip("link", "delete", self.name)

    def _make_bridge(self) -> None:
        try:
            _ip("link", "add", "name", self.name, "type", "bridge", "stp_state", "0")
        except LabError as exc:
            raise LabError(f"{exc} (does the kernel have bridges: CONFIG_BRIDGE?)") from exc
        _ip("link", "set", "dev", self.name, "alias", f"{MARK} pid {os.getpid()}")
        ipv6 = Path("/proc/sys/net/ipv6/conf") / self.name / "disable_ipv6"
        with contextlib.suppress(OSError):
            ipv6.write_text("1")
        _ip("address", "add", f"{self.address}/24", "dev", self.name)
        _ip("link", "set", "dev", self.name, "up")

    def _delete_bridge(self) -> None:
        alias = self._bridge_alias()
        if alias is not None and alias.startswith(MARK):
            _ip("link", "delete", self.name)

    def _check_subnet_free(self) -> None:
        """Refuse a subnet another interface already has: lab traffic would go there."""
        for entry in json.loads(_ip("-j", "-4", "address", "show") or "[]"):
            if entry.get("ifname") == self.name:
                continue
            for info in entry.get("addr_info", []):
                local = ipaddress.IPv4Address(info["local"])
                if local in self.network:
                    raise LabError(
                        f"{self.network} is in use here: {local} on {entry['ifname']}; "
                        f"give the lab another subnet"
                    )
        for route in json.loads(_ip("-j", "-4", "route", "show") or "[]"):
            if route.get("dst") in (None, "default") or route.get("dev") == self.name:
                continue
            if ipaddress.IPv4Network(route["dst"], strict=False).overlaps(self.network):
                raise LabError(
                    f"{self.network} is routed here via {route.get('dev')} ({route['dst']}); "
                    f"give the lab another subnet"
                )

    def _allow_forwarding(self) -> list[str] | None:
        """With br_netfilter on, bridged IPv4 goes through iptables' FORWARD chain: when that
        chain has a DROP policy or any rule, accept the lab bridge's own traffic first."""
        if _read(Path("/proc/sys/net/bridge/bridge-nf-call-iptables")) != "1":
            return None
        if shutil.which("iptables") is None:
            return None  # no rules can have been added without it (none to see here)
        rules = _run(["iptables", "-w", "-S", "FORWARD"], "iptables -S FORWARD").splitlines()
        if rules == ["-P FORWARD ACCEPT"]:
            return None
        rule = self._forward_accept()
        check = subprocess.run(["iptables", "-w", "-C", *rule], capture_output=True, check=False)
        if check.returncode != 0:
            _run(["iptables", "-w", "-I", *rule], "iptables: accept the lab bridge's traffic")
        return rule

    def _forward_accept(self) -> list[str]:
        """The FORWARD rule that lets the lab bridge's own traffic through (and only it)."""
        rule = ["FORWARD", "-i", self.name, "-o", self.name, "-m", "comment"]
        return [*rule, "--comment", f"{MARK} {self.name}", "-j", "ACCEPT"]

    def _drop_forward_rule(self) -> None:
        if self._forward_rule is not None:
            _run(["iptables", "-w", "-D", *self._forward_rule], "iptables -D (lab bridge rule)")
            self._forward_rule = None

    # ------------------------------------------------------------------ state and leftovers

    def _save_state(self) -> None:
        """``state.json`` in the lab's directory: what a later sweep needs if this process
        is killed (its cgroups, whose processes would otherwise run on)."""
        if self._dir is None:
            return
        with self._guard:
            cgroups = [
                str(h / f"{PREFIX}{self.name}-{m}")
                for h in self._cgroup_parents
                for m in self.machines
            ]
            state = {"bridge": self.name, "pid": os.getpid(), "cgroups": cgroups}
            tmp = self._dir / "state.json.tmp"
            tmp.write_text(json.dumps(state))
            tmp.replace(self._dir / "state.json")

    def _remove_dir(self) -> None:
        if self._dir is None:
            return
        for parent in self._cgroup_parents:
            for path in parent.glob(f"{PREFIX}{self.name}-*"):
                _kill_cgroup(path)
                _remove_cgroup(path)
        _remove_tree(self._dir)
        self._dir = None
        self._cgroup_parents = []

    def _sweep_leftovers(self) -> None:
        """Remove what a lab of this bridge name left behind when it was killed: its machines
        (their cgroups killed), its mounts and directory, its FORWARD rule. Only called with
        the bridge's lock held, so nothing found can belong to a live lab."""
        for parent in self._cgroup_parents:  # machines of a killed lab: still running
            for path in parent.glob(f"{PREFIX}{self.name}-*"):
                _kill_cgroup(path)
                _remove_cgroup(path)
        for old in sorted(self.workdir.glob(f"{PREFIX}{self.name}-*")):
            if old == self._dir or not (old / "state.json").exists():
                continue
            with contextlib.suppress(OSError, ValueError):  # cgroups under another parent
                for text in json.loads((old / "state.json").read_text()).get("cgroups", []):
                    _kill_cgroup(Path(text))
                    _remove_cgroup(Path(text))
            _remove_tree(old)
        if shutil.which("iptables") is not None:
            delete = ["iptables", "-w", "-D", *self._forward_accept()]
            for _ in range(10):  # a killed lab's rule (once per killed lab at most)
                if subprocess.run(delete, capture_output=True, check=False).returncode != 0:
                    break


# --------------------------------------------------------------------------- machines

ADDRESS_UNIT = """\
# senex_scale.lab.machines: this machine's address on the lab bridge (no DHCP, no gateway)
[Unit]
Description=senex-scale lab address {address}/24 on host0
Before=network.target ssh.service
Wants=network.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=-/bin/sh -c 'echo 1 > /proc/sys/net/ipv6/conf/host0/disable_ipv6'
ExecStart=/usr/sbin/ip address replace {address}/24 dev host0
ExecStart=/usr/sbin/ip link set dev host0 up

[Install]
WantedBy=multi-user.target
"""

SSHD_CONFIG = """\
# senex_scale.lab.machines: this machine's own host key; root with the lab's key only
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""

RESOLV_CONF = """\
# senex_scale.lab.machines: no DNS in the lab (no route out); the lab's names are in /etc/hosts
"""

_JOIN_CGROUPS = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    'echo $$ > "$1/cgroup.procs" || { echo "senex-lab: cannot join cgroup $1" >&2; exit 97; }; '
    'shift; n=$((n - 1)); done; exec "$@"'
)
"""Run by ``sh -c`` before systemd-nspawn: move into the machine's cgroups, then exec."""


class Machine:
    """One booted Debian 13 machine of the lab: systemd, sshd on ``address``:22, Podman.

    ``up()`` prepares its root (first time) and boots it; ``power_off()`` cuts its power;
    ``shutdown()`` shuts it down cleanly; ``boot_again()`` boots it once more with the same
    root, address and keys; ``close()`` powers it off and removes its files."""

    def __init__(
        self, net: LabNet, name: str, index: int, *, boot_timeout: float = BOOT_TIMEOUT
    ) -> None:
        if not _NAME.fullmatch(name):
            raise LabError(f'"{name}" is not a machine name (a-z0-9-, at most 12 characters)')
        self.net = net
        self.name = name
        self.index = index
        self._address = net.address_of(index)
        self.boot_timeout = boot_timeout
        self.machine_id = uuid.uuid4().hex
        self.boot_seconds: float | None = None
        """How long the last boot took, systemd-nspawn to ssh answering."""
        self.degraded: list[str] = []
        """Units that had failed when the last boot ended "degraded"."""
        self.exit_status: int | None = None
        """systemd-nspawn's exit status after the last stop: 0 after a clean poweroff,
        -9 after a power cut."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._init: int | None = None
        self._prepared = False
        net.register(self)

    def __repr__(self) -> str:
        state = "running" if self.running else "off"
        return f"<Machine {self.name} {self.address} {state}>"

    # ------------------------------------------------------------------ what callers read

    @property
    def address(self) -> str:
        return self._address

    @property
    def dir(self) -> Path:
        """Its files on the host: layers, Podman storage, host key, console log."""
        return self.net.dir / self.name

    @property
    def root(self) -> Path:
        """Its root filesystem as the host sees it (the overlay's merged dir). Write with
        ``write_file``: an absolute symlink in there points into the host's own files."""
        return self.dir / "merged"

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"

    @property
    def pid_file(self) -> Path:
        """Holds its systemd's PID while it runs (for ``nsenter = "FILE"``)."""
        return self.dir / "systemd.pid"

    @property
    def host_key(self) -> Path:
        """Its public host key (``ssh-ed25519 AAAA...``), pinned in ``net.known_hosts``."""
        return self.dir / "host_key.pub"

    @property
    def veth(self) -> str:
        """The host side of its link, on the bridge."""
        return f"vb-{self.name}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def init_pid(self) -> int:
        """Its systemd's PID as the host sees it; ``LabError`` when it is not running."""
        if not self.running or self._init is None or not Path(f"/proc/{self._init}").exists():
            raise LabError(f"machine {self.name} is not running")
        return self._init

    # ------------------------------------------------------------------ commands

    def exec(self, *argv: str, timeout: float = 60.0) -> Completed:
        """Run ``argv`` inside the machine (nsenter into its systemd's namespaces, a clean
        environment); any exit status. ``TemporaryError`` past ``timeout``."""
        return run(NsenterTransport(self.init_pid), argv, timeout)

    def ssh_options(self) -> list[str]:
        """The ``-o`` options that pin its host key and keep ssh on the lab (no proxy)."""
        return [
            f"UserKnownHostsFile={self.net.known_hosts}",
            "GlobalKnownHostsFile=/dev/null",
            "StrictHostKeyChecking=yes",
            "IdentitiesOnly=yes",
            "ProxyCommand=none",
            "ProxyJump=none",
        ]

    def ssh_argv(self, *command: str, connect_timeout: float = 10.0) -> list[str]:
        """The ssh argv that runs ``command`` on it as root (the remote command is one
        shlex-quoted argument), with no ssh_config but these options."""
        argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes"]
        argv += ["-o", f"ConnectTimeout={connect_timeout:g}"]
        argv += ["-i", str(self.net.client_key), "-l", "root"]
        for option in self.ssh_options():
            argv += ["-o", option]
        argv += ["--", self.address]
        return [*argv, shlex.join(command)] if command else argv

    def ssh(self, *command: str, timeout: float = 30.0, connect_timeout: float = 10.0) -> Completed:
        """Run ``command`` on it over ssh; any exit status (255: ssh itself failed)."""
        argv = self.ssh_argv(*command, connect_timeout=connect_timeout)
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise LabError(
                f"ssh root@{self.address} {shlex.join(command)}: no answer within {timeout:g}s"
            ) from None
        return Completed(tuple(argv), done.returncode, done.stdout, done.stderr)

    def ssh_settings(self) -> dict[str, Any]:
        """What the systemd runtime (``host = ...``) needs to reach it over ssh."""
        return {
            "host": self.address,
            "ssh_user": "root",
            "ssh_identity": str(self.net.client_key),
            "ssh_options": self.ssh_options(),
        }

    def write_file(self, inside: str, text: str, mode: int = 0o644) -> Path:
        """Write a file in its root (``/etc/...``), replacing a symlink rather than following
        it; the host path. Its root is there from the first ``up()`` to ``close()``."""
        if not _mounts_under(self.root):
            raise LabError(f"machine {self.name}: its root is not mounted (up() first)")
        return _write(self.root, inside, text, mode)

    # ------------------------------------------------------------------ life cycle

    def up(self) -> Self:
        """Boot it (preparing its root the first time); return once systemd says running or
        degraded and ssh answers with the pinned host key. ``LabError`` with the console
        log's tail otherwise (the machine is powered off then)."""
        if self.running:
            return self
        self._prepare()
        started = time.monotonic()
        self._start()
        try:
            self._wait_booted(started + self.boot_timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                self.power_off()
            raise
        self.boot_seconds = time.monotonic() - started
        return self

    def boot_again(self) -> Self:
        """``up()`` after a power cut or a shutdown: same root, address and keys."""
        return self.up()

    def power_off(self) -> None:
        """A power cut: every process of the machine SIGKILLed at once (its cgroup), so its
        address stops answering; its root stays as it was (a disk). No-op when off."""
        for path in self.net.cgroup_paths(self.name):
            _kill_cgroup(path)
        if self._init is not None:  # no cgroup here: the PID namespace dies with its init
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._init, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self._stopped()
        # A new boot in the old (empty) cgroup tree has its early services SIGKILLed as they
        # start (seen on this cgroup v1 + v2 host): every boot gets a fresh tree.
        for path in self.net.cgroup_paths(self.name):
            _remove_cgroup(path)

    def shutdown(self, timeout: float = STOP_TIMEOUT) -> None:
        """A clean poweroff (systemd-nspawn turns SIGTERM into one); a power cut after
        ``timeout`` seconds. No-op when off."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.power_off()
                raise LabError(
                    f"machine {self.name}: no clean shutdown within {timeout:g}s (power cut); "
                    f"{self.console_log}:\n{tail(self.console_log)}"
                ) from None
        self.power_off()  # anything left in its cgroup, and the bookkeeping

    def close(self) -> None:
        """Power it off, unmount its root, remove its files and cgroups."""
        try:
            self.power_off()
            if self.net.created:
                _remove_tree(self.dir)
        finally:
            self.net.forget(self)

    # ------------------------------------------------------------------ inside

    def _prepare(self) -> None:
        """Its layers, Podman storage, keys and files (idempotent; the upper layer stays)."""
        rootfs = self.net.rootfs
        for sub in ("upper", "work", "merged"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        containers = self.dir / "containers"
        if not containers.exists():
            partial = self.dir / "containers.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            source = rootfs / "var/lib/containers"
            _run(
                ["cp", "-a", "--reflink=auto", f"{source}/.", str(partial)],
                f"machine {self.name}: copy of {source}",
                timeout=600,
            )
            partial.rename(containers)
        key = _keygen(self.dir / "host_key", f"{self.name}-host")
        self.net.pin(self.address, self.host_key.read_text())
        if not _mounts_under(self.root):
            layers = [str(rootfs), str(self.dir / "upper"), str(self.dir / "work")]
            if any(c in text for text in layers for c in ",:"):
                raise LabError(f"machine {self.name}: a layer path has ',' or ':': {layers}")
            options = f"lowerdir={layers[0]},upperdir={layers[1]},workdir={layers[2]}"
            _run(
                ["mount", "-t", "overlay", f"senex-lab-{self.name}", "-o", options, str(self.root)],
                f"machine {self.name}: overlay mount (does the kernel have overlayfs?)",
            )
        self.write_file("/etc/hostname", f"{self.name}\n")
        self.write_file("/etc/machine-id", f"{self.machine_id}\n", 0o444)
        self.write_file("/etc/resolv.conf", RESOLV_CONF)
        self.net.publish_hosts()
        if not self._prepared:
            self._prepare_once(key)
        self._prepared = True

    def _prepare_once(self, key: Path) -> None:
        unit = "/etc/systemd/system/senex-lab-address.service"
        self.write_file(unit, ADDRESS_UNIT.format(address=self.address))
        wants = _safe_path(self.root, "/etc/systemd/system/multi-user.target.wants/x").parent
        link = wants / "senex-lab-address.service"
        if not link.is_symlink():
            link.symlink_to(unit)
        # The lab's rootfs masks sshd (the single lab shares the host's port 22).
        for masked in ("ssh.service", "sshd.service"):
            path = self.root / "etc/systemd/system" / masked
            if path.is_symlink() and os.readlink(path) == "/dev/null":
                path.unlink()
        ssh = self.root / "etc/ssh"
        for old in ssh.glob("ssh_host_*"):
            old.unlink()  # the rootfs's keys are the same in every machine
        self.write_file("/etc/ssh/ssh_host_ed25519_key", key.read_text(), 0o600)
        self.write_file("/etc/ssh/ssh_host_ed25519_key.pub", self.host_key.read_text())
        self.write_file("/etc/ssh/sshd_config.d/50-senex-lab.conf", SSHD_CONFIG)
        client = Path(f"{self.net.client_key}.pub").read_text()
        _safe_path(self.root, "/root/.ssh/x").parent.chmod(0o700)
        self.write_file("/root/.ssh/authorized_keys", client, 0o600)

    def _start(self) -> None:
        cgroups = self.net.cgroups_for(self.name)
        nspawn = [
            "systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
            "-D", str(self.root), "-b", "--console=pipe",
            f"--machine={self.name}", f"--uuid={self.machine_id}",
            "--private-network", f"--network-bridge={self.net.name}",
            f"--bind={self.dir / 'containers'}:/var/lib/containers",
            "--resolv-conf=off", "--link-journal=no",
        ]  # fmt: skip
        argv = ["sh", "-c", _JOIN_CGROUPS, "senex-lab", str(len(cgroups)), *map(str, cgroups)]
        with self.console_log.open("ab") as out:
            out.write(f"\n=== senex-lab: boot {time.strftime('%H:%M:%S')} ===\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                [*argv, *nspawn],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._init = None

    def _failed(self, why: str) -> LabError:
        """A boot failure: why, the console log's tail and, if it still runs, its journal's."""
        journal = ""
        with contextlib.suppress(LabError, TemporaryError, PermanentError):
            done = self.exec("journalctl", "-b", "-n", "30", "--no-pager", timeout=10)
            journal = f"\njournal:\n{done.stdout}"
        return LabError(
            f"machine {self.name} ({self.address}): {why}; "
            f"{self.console_log}:\n{tail(self.console_log)}{journal}"
        )

    def _wait_booted(self, deadline: float) -> None:
        state = "no systemd yet"
        while True:
            proc = self._proc
            assert proc is not None
            if proc.poll() is not None:
                raise self._failed(f"systemd-nspawn exited ({proc.returncode}) while booting")
            if time.monotonic() > deadline:
                raise self._failed(f"not up within {self.boot_timeout:g}s (state: {state})")
            if self._init is None:
                self._init = self._find_init(proc.pid)
                if self._init is not None:
                    self.pid_file.write_text(f"{self._init}\n")
            if self._init is not None:
                try:
                    done = self.exec("systemctl", "is-system-running", timeout=20)
                except TemporaryError as exc:  # nsenter while its namespaces are being made
                    state = str(exc)
                else:
                    state = done.stdout.strip() or done.stderr.strip() or state
                    if state in _UP_STATES:
                        break
            time.sleep(0.25)
        if state == "degraded":
            failed = self.exec("systemctl", "--failed", "--plain", "--no-legend").stdout
            self.degraded = [line.split()[0] for line in failed.splitlines() if line.strip()]
        ipv6 = Path("/proc/sys/net/ipv6/conf") / self.veth / "disable_ipv6"
        with contextlib.suppress(OSError):
            ipv6.write_text("1")
        while True:
            done = self.ssh("true", timeout=15, connect_timeout=2)
            if done.returncode == 0:
                return
            if "Host key verification failed" in done.stderr:
                raise self._failed(f"ssh: host key is not the pinned one: {done.stderr.strip()}")
            if time.monotonic() > deadline:
                raise self._failed(f"ssh root@{self.address} does not answer: {done.stderr}")
            time.sleep(0.25)

    @staticmethod
    def _find_init(nspawn: int) -> int | None:
        """The container's PID 1 seen from the host: a descendant of systemd-nspawn whose PID
        in its own namespace is 1."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(nspawn).children(recursive=True):
                status = _read(Path(f"/proc/{child.pid}/status"))
                for line in status.splitlines():
                    if line.startswith("NSpid:"):
                        ids = line.split()[1:]
                        if len(ids) > 1 and ids[-1] == "1":
                            return child.pid
        return None

    def _stopped(self) -> None:
        """After its processes are gone: reap systemd-nspawn, wait for its link to vanish
        (the kernel removes the veth once the network namespace is freed: a new boot needs
        the name)."""
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.exit_status = self._proc.wait(timeout=15)
        self._proc = None
        self._init = None
        if self.net.created:
            self.pid_file.unlink(missing_ok=True)
        deadline = time.monotonic() + 15
        while (Path("/sys/class/net") / self.veth).exists():
            if time.monotonic() > deadline:
                raise LabError(
                    f"machine {self.name}: {self.veth} still exists 15 s after power off"
                )
            time.sleep(0.05)


# --------------------------------------------------------------------------- all at once


@contextlib.contextmanager
def lab_machines(
    names: Sequence[str] | Mapping[str, int],
    *,
    bridge: str = BRIDGE,
    subnet: str = SUBNET,
    first_index: int = 10,
    boot_timeout: float = BOOT_TIMEOUT,
    wait: float = 0.0,
    lab: Path = LAB,
) -> Iterator[dict[str, Machine]]:
    """The lab's bridge and ``names`` booted in parallel (threads), by name; all of it torn
    down at the end of the block, also when a boot failed. ``names``: a list (addresses
    ``first_index``, ``first_index + 1``, ... in order) or a mapping name -> index."""
    if isinstance(names, Mapping):
        indices = dict(names)
    else:
        indices = {name: first_index + i for i, name in enumerate(names)}
    if not indices:
        raise LabError("lab_machines: no machine names given")
    net = LabNet(bridge, subnet, lab=lab, wait=wait)
    failure: BaseException | None = None
    try:
        net.create()
        machines = {
            name: Machine(net, name, index, boot_timeout=boot_timeout)
            for name, index in indices.items()
        }
        with concurrent.futures.ThreadPoolExecutor(len(machines)) as pool:
            futures = {name: pool.submit(machine.up) for name, machine in machines.items()}
        errors = [(n, f.exception()) for n, f in futures.items() if f.exception() is not None]
        if errors:
            first = errors[0][1]
            message = "; ".join(f"{name}: {exc}" for name, exc in errors)
            raise LabError(f"lab machines did not boot: {message}") from first
        yield machines
    except BaseException as exc:
        failure = exc
        raise
    finally:
        try:
            _close_all(net)
        except LabError as exc:
            if failure is None:
                raise
            failure.add_note(str(exc))


def _close_all(net: LabNet) -> None:
    """Close the machines in parallel (each waits for its link to vanish), then the net."""
    machines = list(net.machines.values())
    errors: list[str] = []
    if machines:
        with concurrent.futures.ThreadPoolExecutor(len(machines)) as pool:
            for machine, future in [(m, pool.submit(m.close)) for m in machines]:
                if future.exception() is not None:
                    errors.append(f"machine {machine.name}: {future.exception()}")
    try:
        net.close()
    except LabError as exc:
        errors.append(str(exc))
    if errors:
        raise LabError("lab teardown: " + "; ".join(errors))
