"""Ansible connection plugin: run tasks inside an sdlab container by entering its namespaces."""

from __future__ import annotations

import shlex
import subprocess

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

DOCUMENTATION = r"""
name: sdlab_nsenter
short_description: run tasks inside a container booted by tests/system/sdlab
description:
  - Enters the mount, PID, network, UTS and IPC namespaces of the container's PID 1 (systemd,
    as the host sees its PID) with nsenter, with a clean environment, as root, as C(sdlab sh)
    does. Used by make fleet-test; needs root on the controller.
  - Supports pipelining, so a module is one nsenter and one python3, and no file is copied.
options:
  nsenter_pid:
    description: Host PID of the container's systemd (sdlab writes it to STATE/NAME/pid).
    type: int
    required: true
    vars:
      - name: ansible_nsenter_pid
"""

display = Display()

INNER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Connection(ConnectionBase):
    """One container: every command is `nsenter -t PID -m -p -n -u -i -- env -i ... sh -c CMD`."""

    transport = "sdlab_nsenter"
    has_pipelining = True

    def _connect(self) -> Connection:
        if not self._connected:
            self._pid = int(self.get_option("nsenter_pid"))
            self._play_context.remote_user = "root"
            display.vvv(f"NSENTER into pid {self._pid}", host=self._play_context.remote_addr)
            self._connected = True
        return self

    def _argv(self, command: str) -> list[bytes]:
        # entering the mount namespace puts us at the container's / (sdlab pivots into it)
        argv = ["nsenter", "-t", str(self._pid), "-m", "-p", "-n", "-u", "-i", "--",
                "/usr/bin/env", "-i", f"PATH={INNER_PATH}", "HOME=/root", "LANG=C.UTF-8",
                "/bin/sh", "-c", command]
        return [to_bytes(arg) for arg in argv]

    def exec_command(self, cmd: str, in_data: bytes | None = None,
                     sudoable: bool = True) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"EXEC {to_text(cmd)}", host=self._play_context.remote_addr)
        try:
            done = subprocess.run(self._argv(to_text(cmd)), input=in_data or b"",
                                  capture_output=True, timeout=self._play_context.timeout * 10)
        except subprocess.TimeoutExpired as e:
            raise AnsibleConnectionFailure(f"nsenter into pid {self._pid}: timed out") from e
        if done.returncode == 1 and b"nsenter: " in done.stderr[:200]:
            raise AnsibleConnectionFailure(f"nsenter into pid {self._pid}: "
                                           f"{to_text(done.stderr).strip()}")
        return done.returncode, done.stdout, done.stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self._play_context.remote_addr)
        with open(in_path, "rb") as source:
            data = source.read()
        rc, _, err = self.exec_command(f"cat > {shlex.quote(out_path)}", in_data=data)
        if rc != 0:
            raise AnsibleError(f"failed to write {out_path}: {to_text(err)}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self._play_context.remote_addr)
        rc, out, err = self.exec_command(f"cat {shlex.quote(in_path)}")
        if rc != 0:
            raise AnsibleError(f"failed to read {in_path}: {to_text(err)}")
        with open(out_path, "wb") as target:
            target.write(out)

    def close(self) -> None:
        self._connected = False
