"""A throw-away OpenSSH server on 127.0.0.1, for the remote-bench tests and benchmarks.

    with local_sshd(tmp_dir) as server:
        edgetl bench BUNDLE --on {server.host} {" ".join(server.options())}

Host key, client key and authorized_keys live in ``tmp_dir``; passwords are off; it logs in as the
user running it (whose shell plays the device). Needs Debian's openssh-server (.ci/run installs it).
"""
from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


class SSHDUnavailable(RuntimeError):
    pass


@dataclasses.dataclass
class SSHServer:
    port: int
    key: Path
    known_hosts: Path
    user: str
    pid: int = 0  # the listening sshd (each connection's processes are its children)

    @property
    def host(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def options(self, key: Path | None = None) -> list[str]:
        """edgetl's --ssh-option arguments that log in with this server's key (or another one)."""
        opts = ["-i", str(key or self.key), "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR"]
        return [f"--ssh-option={o}" for o in opts]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_sshd(d: Path):
    exe = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(exe).is_file():
        raise SSHDUnavailable("OpenSSH server not installed (apt-get install openssh-server; .ci/run does)")
    for name in ("host_key", "client_key", "other_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
    (d / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {d / 'host_key'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}", f"PidFile {d / 'sshd.pid'}", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
        "LogLevel ERROR", ""]))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen([exe, "-D", "-e", "-f", str(d / "sshd_config")], stderr=subprocess.PIPE)
    server = SSHServer(port, d / "client_key", d / "known_hosts", getpass.getuser(), proc.pid)
    probe = ["ssh", "-p", str(port), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-i", str(server.key),
             "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
             f"{server.user}@127.0.0.1", "true"]
    try:
        for _ in range(50):
            if proc.poll() is not None:
                raise SSHDUnavailable(f"sshd exited: {proc.stderr.read().decode()[-2000:]}")
            if subprocess.run(probe, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise SSHDUnavailable("sshd did not accept the test key")
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=10)
