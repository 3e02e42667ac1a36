"""A device over the system ssh (your keys, ~/.ssh/config, jump hosts): one place builds every ssh call.

    dev = Remote("pi@robot.local")                     # or "ssh://pi@10.0.0.7:2222", an ssh alias
    dev.run("uname -m").stdout                          # a POSIX sh script on the device
    dev = dev.resolved()                                # its cache folder as an absolute path there

Every call has ssh keep-alives: a link that goes silent (a robot driving out of Wi-Fi) ends the call with
one line within ``ssh_timeout`` seconds instead of hanging, and the device-side watcher (edgetl.benchmark.
remote) kills what ran there once its sshd notices. A refused key and an unreachable host say so apart.
"""
from __future__ import annotations

import dataclasses
import shlex
import subprocess
from urllib.parse import urlparse

from ..errors import EdgetlError


def q(path: str) -> str:
    """A device path quoted for sh; a leading ~ stays the device user's home (it expands there)."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + (shlex.quote(path[1:]) if len(path) > 1 else "")
    return shlex.quote(path)


class RemoteError(EdgetlError):
    """The device cannot be reached, refuses the key, lacks edgetl, or its bench failed."""


def last_line(b: bytes) -> str:
    """The line of a device's stderr worth showing: its last "error:" line, else its last line."""
    lines = [ln.strip() for ln in b.decode(errors="replace").splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("error:")]
    return (errs or lines or [""])[-1].removeprefix("error:").strip()


def ssh_failure(host: str, stderr: bytes, timeout: float, *, connected: bool = False) -> RemoteError:
    """ssh's own exit (255) as one line that tells a refused key from a host that cannot be reached, and
    both from a link lost mid-call (``connected``: earlier calls on this device got through)."""
    text = stderr.decode(errors="replace")
    why = last_line(stderr) or "ssh exited 255"
    if "Permission denied" in text or "Too many authentication failures" in text:
        return RemoteError(f"{host} refused the ssh key ({why}): ssh {host} must log in without a password "
                           f"(ssh-copy-id, or --ssh-option=-i --ssh-option=KEY)")
    if connected or ("Timeout, server" in text and "not responding" in text):
        return RemoteError(f"the link to {host} was lost mid-call: it went silent past --ssh-timeout {timeout:g} s "
                           f"or dropped ({why}); what ran there is stopped when the device notices: check the "
                           f"network, or raise --ssh-timeout")
    return RemoteError(f"cannot reach {host} over ssh: {why} (check the host name, the port and that sshd runs)")


@dataclasses.dataclass(frozen=True)
class Remote:
    """A device reachable with ssh. ``host``: user@host, ssh://user@host:port, or an ssh_config alias."""

    host: str
    ssh_options: tuple[str, ...] = ()  # more ssh arguments, e.g. ("-i", "key") or ("-o", "ProxyJump=gw")
    edgetl: str = "edgetl"  # the device's edgetl command (--remote-edgetl when not on the login PATH; ~ expands there)
    cache: str = "~/.cache/edgetl/remote"  # on the device
    connect_timeout: int = 10
    ssh_timeout: float = 30.0  # a silent link ends a call after this many seconds (keep-alive every 5 s at most)

    def __post_init__(self):
        if not 2 <= self.ssh_timeout <= 3600:
            raise RemoteError(f"--ssh-timeout {self.ssh_timeout:g}: use 2..3600 seconds")

    def resolved(self) -> "Remote":
        """The same device with its cache folder as an absolute path there (made if missing)."""
        p = self.run(f"mkdir -p {q(self.cache)} && cd {q(self.cache)} && pwd")
        if p.returncode != 0:
            raise RemoteError(f"cannot create {self.cache} on {self.host}: {last_line(p.stderr)}")
        return dataclasses.replace(self, cache=p.stdout.decode().strip().splitlines()[-1])

    def keepalive(self) -> list[str]:
        interval = max(1, min(5, int(self.ssh_timeout // 3)))
        return ["-o", f"ServerAliveInterval={interval}",
                "-o", f"ServerAliveCountMax={max(1, round(self.ssh_timeout / interval))}"]

    def ssh_argv(self) -> list[str]:
        dest, port = self.host, []
        if self.host.startswith("ssh://"):
            u = urlparse(self.host)
            dest = f"{u.username}@{u.hostname}" if u.username else u.hostname
            port = ["-p", str(u.port)] if u.port else []
        # BatchMode: a missing or refused key fails at once instead of waiting at a password prompt
        if dest.startswith("-"):
            raise RemoteError(f"{self.host!r} is not a host (it starts with '-'): name the device, e.g. pi@robot.local")
        return ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}", *self.keepalive(),
                *port, *self.ssh_options, "--", dest]

    def command(self, script: str) -> list[str]:
        """The argv that runs a POSIX sh script on the device."""
        return [*self.ssh_argv(), "sh", "-c", shlex.quote(script)]

    def run(self, script: str, *, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a POSIX sh script on the device; ssh's own failures become one RemoteError line."""
        try:
            p = subprocess.run(self.command(script), input=stdin, capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise RemoteError("the ssh command is not installed here: install OpenSSH's client "
                              "(apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.host} did not answer within {timeout:.0f} s") from None
        if p.returncode == 255:  # ssh's own exit code: could not connect, authenticate, or the link died
            raise ssh_failure(self.host, p.stderr, self.ssh_timeout)
        return p
