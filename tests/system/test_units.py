"""The shipped units and the client drop-in, under a real systemd (no relay running).

What a hardened daemon sees with and without spoolmail's drop-in, what
systemd-analyze says about the unit files, and the bind-onto-a-missing-path trap.
"""

from __future__ import annotations

import pytest

from tests.support.container import Container
from tests.system import units
from tests.system.units import HARDENED, install_unit, oneshot, start, without

pytestmark = pytest.mark.system

INCOMING = "/var/spool/spoolmail/incoming"
MESSAGE = "To: alice\nSubject: hello from a sandbox\n\nbody\n"
SEND = f"id -u; printf '{MESSAGE}' | "


def incoming_files(ct: Container) -> list[str]:
    """stat lines (name uid gid mode) of what is queued in incoming/."""
    out = ct.sh(f"cd {INCOMING} && for f in *; do [ -e \"$f\" ] && "
                "stat -c '%n %u %G %a' \"$f\"; done; true").stdout
    return sorted(out.splitlines())


def test_shipped_units_pass_systemd_analyze_verify(ct: Container) -> None:
    result = ct.run(
        ["systemd-analyze", "verify", "--man=no",
         "/usr/lib/systemd/system/spoolmail-relay.service",
         "/usr/lib/systemd/system/spoolmail-smtp-proxy.socket",
         "/usr/lib/systemd/system/spoolmail-smtp-proxy.service"],
        check=False,
    )
    assert result.returncode == 0, result
    assert result.output.strip() == "", result


@pytest.mark.parametrize(
    ("variant", "unit", "target"),
    [
        (None, "spoolmail-relay.service", 1.5),  # smarthost anywhere
        ("loopback-only", "spoolmail-relay.service", 1.5),
        ("local-mta", "spoolmail-relay.service", 1.0),  # local Exim
        ("local-mta", "spoolmail-smtp-proxy.service", 1.0),
    ],
)
def test_offline_exposure_within_target(
    ct: Container, variant: str | None, unit: str, target: float
) -> None:
    units.relay_dropin(ct, variant)
    assert units.exposure(ct, unit, offline=True) <= target


def test_hardened_daemon_exposure_offline(ct: Container) -> None:
    install_unit(ct, "alertd.service", oneshot("alertd", "true", HARDENED), client_dropin=True)
    assert units.exposure(ct, "alertd.service", offline=True) <= 1.5


def test_front_works_in_hardened_unit_with_the_dropin(ct: Container) -> None:
    ct.systemctl("stop", "spoolmail-relay.service", check=False)
    before = incoming_files(ct)
    install_unit(
        ct, "alertd.service",
        oneshot("alertd", SEND + "/usr/sbin/sendmail -t", HARDENED), client_dropin=True,
    )
    run = start(ct, "alertd.service")
    assert run.result == "success", run
    uid = run.output.split()[0]
    new = [line for line in incoming_files(ct) if line not in before]
    assert len(new) == 1, (before, new)
    _name, owner, group, mode = new[0].split()
    # owned by the daemon's (dynamic) uid, group and mode readable by the relay
    assert (owner, group, mode) == (uid, "spoolmail", "640"), new


def test_same_unit_without_the_dropin_gets_the_clear_message(ct: Container) -> None:
    before = incoming_files(ct)
    install_unit(
        ct, "alertd-bare.service",
        oneshot("alertd without drop-in", SEND + "/usr/libexec/spoolmail/sendmail -t", HARDENED),
    )
    run = start(ct, "alertd-bare.service")
    assert run.result == "exit-code" and run.status == 73, run  # EX_CANTCREAT
    assert f"ReadWritePaths={INCOMING}" in run.output, run
    assert "/usr/share/spoolmail/spoolmail-client.conf" in run.output, run
    assert incoming_files(ct) == before
    # control: the drop-in alone makes the difference
    install_unit(
        ct, "alertd-bare.service",
        oneshot("alertd with drop-in", SEND + "/usr/libexec/spoolmail/sendmail -t", HARDENED),
        client_dropin=True,
    )
    assert start(ct, "alertd-bare.service").result == "success"
    assert len(incoming_files(ct)) == len(before) + 1


def test_sendmail_is_the_front_for_that_unit_only(ct: Container) -> None:
    script = "/usr/sbin/sendmail --version; /usr/lib/sendmail --version"
    install_unit(ct, "which.service", oneshot("which", script, HARDENED), client_dropin=True)
    run = start(ct, "which.service")
    assert run.result == "success", run
    assert run.output.count("spoolmail sendmail front") == 2, run
    # everyone else still has Exim
    outside = ct.run(["/usr/sbin/sendmail", "-bV"], check=False)
    assert "Exim version" in outside.stdout, outside
    assert "spoolmail" not in outside.output
    install_unit(ct, "which.service", oneshot("which", "/usr/sbin/sendmail -bV", HARDENED))
    assert "spoolmail" not in start(ct, "which.service").output


def test_enable_for_leaves_a_missing_sendmail_path_alone(ct: Container) -> None:
    ct.sh("rm -f /usr/lib/sendmail")
    try:
        install_unit(ct, "trap.service", oneshot("trap", SEND + "/usr/sbin/sendmail -t", HARDENED))
        report = ct.run(
            ["python3", "-c",
             "from spoolmail.dropin import enable_for\n"
             "print('\\n'.join(enable_for('trap')))"],
        ).stdout
        assert "wrote /etc/systemd/system/trap.service.d/spoolmail-client.conf" in report
        assert "/usr/lib/sendmail: left alone" in report, report
        ct.systemctl("daemon-reload")
        assert start(ct, "trap.service").result == "success"
        assert not ct.exists("/usr/lib/sendmail")
        # control: the static drop-in binds onto the missing path, and systemd
        # leaves an empty file there on the real file system
        install_unit(ct, "trap.service", oneshot("trap", "true", HARDENED), client_dropin=True)
        start(ct, "trap.service")
        assert ct.sh("stat -c '%s %F' /usr/lib/sendmail").stdout.strip() == "0 regular empty file"
    finally:
        ct.sh("rm -f /usr/lib/sendmail && ln -s ../sbin/sendmail /usr/lib/sendmail")
        ct.sh("rm -rf /etc/systemd/system/trap.service.d && systemctl daemon-reload")


def test_ip_address_allow_localhost_is_enforced_here(ct: Container) -> None:
    """The relay's IPAddressAllow=localhost needs bpf(), which nspawn filters by default."""
    ct.sh("ip addr add 198.18.0.1/32 dev lo 2>/dev/null || true")
    ct.run(["systemd-run", "--unit=listener", "--collect", "python3", "-c",
            "import socket, time\n"
            "s = socket.create_server(('198.18.0.1', 2525))\n"
            "while True: s.accept()[0].close()\n"], check=False)
    ct.wait_for("ss -Hltn 'sport = :2525' | grep -q 198.18.0.1")
    probe = ("import socket, sys\n"
             "for host, port in (('127.0.0.1', 25), ('198.18.0.1', 2525)):\n"
             "    try:\n"
             "        socket.create_connection((host, port), timeout=10).close()\n"
             "        print(host, 'connected')\n"
             "    except OSError as exc:\n"
             "        print(host, 'refused', exc.errno)\n")
    limited = ct.run(["systemd-run", "--wait", "--pipe", "-q",
                      "-p", "IPAddressDeny=any", "-p", "IPAddressAllow=localhost",
                      "python3", "-c", probe])
    control = ct.run(["systemd-run", "--wait", "--pipe", "-q", "python3", "-c", probe])
    ct.systemctl("stop", "listener.service", check=False)
    assert "127.0.0.1 connected" in limited.stdout, limited
    assert "198.18.0.1 refused" in limited.stdout, limited
    assert "198.18.0.1 connected" in control.stdout, control


def test_home_is_hidden_from_the_hardened_unit(ct: Container) -> None:
    ct.sh("mkdir -p /home/someone && echo note > /home/someone/note.txt && "
          "chmod 0755 /home/someone && chmod 0644 /home/someone/note.txt")
    script = "cat /home/someone/note.txt"
    install_unit(ct, "peek.service", oneshot("peek", script, HARDENED), client_dropin=True)
    hidden = start(ct, "peek.service")
    install_unit(ct, "peek.service",
                 oneshot("peek", script, without(HARDENED, "ProtectHome")), client_dropin=True)
    control = start(ct, "peek.service")
    assert hidden.result == "exit-code" and "note" not in hidden.output.split(), hidden
    assert control.result == "success" and control.output.strip() == "note", control
