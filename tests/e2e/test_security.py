"""End to end: certificates from another CA, revoked users, hostile bytes on the port."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
from pathlib import Path

import yaml

from shared.errors import ExitCode
from tests.e2e.harness import Deployment, run, tool, tunnel_address, wait_until


def _profile_dir(home: Path) -> Path:
    (directory,) = (home / "profiles").iterdir()
    return directory


def _other_jumpoint(root: Path) -> Path:
    """A profile enrolled with a different Jumpoint (another CA): its directory."""
    other = Deployment(root)
    other.items = []
    other.create().serve()
    try:
        return _profile_dir(other.home)
    finally:
        other.stop_all()


def _forged_profile(
    deployment: Deployment, name: str, files: dict[str, Path], **settings: object
) -> Path:
    """A JUMP_HOME whose one profile is alice's with some files and settings replaced."""
    ours = _profile_dir(deployment.home)
    home = deployment.root / f"home-{name}"
    directory = home / "profiles" / ours.name
    shutil.copytree(ours, directory)
    for file_name, source in files.items():
        shutil.copyfile(source, directory / file_name)
    document = yaml.safe_load((directory / "profile.yaml").read_text())
    document.update(settings)
    (directory / "profile.yaml").write_text(yaml.safe_dump(document))
    (home / "current").write_text(ours.name + "\n")
    return home


def test_a_client_certificate_from_another_ca_is_refused(deployment: Deployment):
    """The Jumpoint refuses a console whose certificate another CA signed, and says so."""
    deployment.create().serve()
    foreign = _other_jumpoint(deployment.root / "other")
    home = _forged_profile(
        deployment,
        "mallory",
        {"client.pem": foreign / "client.pem", "client.key": foreign / "client.key"},
    )
    result = deployment.jump("items", JUMP_HOME=str(home))
    assert result.returncode == ExitCode.CERTIFICATE, result.stderr
    assert "the Jumpoint rejected this console's certificate" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_jumpoint_certificate_from_another_ca_is_refused_by_the_console(deployment: Deployment):
    """The console refuses a Jumpoint that its profile's CA did not sign."""
    deployment.create().serve()
    foreign = _other_jumpoint(deployment.root / "other")
    # a profile that trusts another CA (with that CA's certificate) but points at our Jumpoint
    home = _forged_profile(
        deployment,
        "victim",
        {name: foreign / name for name in ("ca.pem", "client.pem", "client.key")},
    )
    result = deployment.jump("items", JUMP_HOME=str(home))
    assert result.returncode == ExitCode.CERTIFICATE, result.stderr
    assert "this console rejected the Jumpoint's certificate" in result.stderr


def test_the_console_checks_the_jumpoint_name(deployment: Deployment):
    """A profile whose server name is not in the Jumpoint's certificate is refused."""
    deployment.create().serve()
    home = _forged_profile(deployment, "wrongname", {}, server_name="jumpoint.elsewhere.example")
    result = deployment.jump("items", JUMP_HOME=str(home))
    assert result.returncode == ExitCode.CERTIFICATE, result.stderr
    assert "is not valid for jumpoint.elsewhere.example" in result.stderr
    # and so does `jump enroll`: an enrollment file naming another server is refused
    deployment.jumpoint("user", "add", "walter", "--group", "default", "--out",
                        str(deployment.root / "walter.enroll"))  # fmt: skip
    path = deployment.root / "walter.enroll"
    document = yaml.safe_load(path.read_text())
    document["jumpoint"]["server_name"] = "jumpoint.elsewhere.example"
    path.write_text(yaml.safe_dump(document))
    enrolled = run(
        [*tool("jump"), "enroll", str(path)],
        {**deployment.env(), "JUMP_HOME": str(deployment.root / "home-walter")},
    )
    assert enrolled.returncode == ExitCode.CERTIFICATE, enrolled.stderr
    assert "is not valid for jumpoint.elsewhere.example" in enrolled.stderr
    audit = deployment.jumpoint("audit", "--json", "--user", "walter").stdout
    assert "user_enrolled" not in audit


def test_revoking_a_user_closes_their_session_and_refuses_new_ones(deployment: Deployment):
    """`jumpoint user revoke` acts on the running daemon without a restart."""
    deployment.items = [
        {
            "name": "web",
            "type": "tcp",
            "host": "127.0.0.1",
            "tunnels": [{"local_port": "auto", "remote_port": 9}],
        }
    ]
    deployment.create().serve()
    session = deployment.open("web")
    session.wait_for_event("ready")
    revoked = deployment.jumpoint("user", "revoke", "alice")
    assert "revoked" in revoked.stdout
    assert session.wait() == ExitCode.SESSION_LOST
    (closed,) = [e for e in session.json_events() if e["event"] == "closed"]
    assert closed["event"] == "closed" and closed["code"] == "revoked"
    assert "revoked" in closed["reason"]
    again = deployment.jump("items")
    assert again.returncode == ExitCode.CERTIFICATE
    assert "revoked" in again.stderr
    listing = deployment.jumpoint("user", "list", "--json")
    assert '"status": "revoked"' in listing.stdout


def test_garbage_and_a_tls_client_without_certificate_leave_the_jumpoint_serving(
    deployment: Deployment,
):
    """Random bytes and a certificate-less TLS client are dropped; the Jumpoint still serves."""
    deployment.items = [
        {
            "name": "web",
            "type": "tcp",
            "host": "127.0.0.1",
            "tunnels": [{"local_port": "auto", "remote_port": 9}],
        }
    ]
    server = deployment.create().serve()
    address = ("127.0.0.1", deployment.port)
    with socket.create_connection(address, timeout=10) as garbage:
        garbage.sendall(os.urandom(64 * 1024))
        try:
            while garbage.recv(65536):
                pass
        except ConnectionResetError:
            pass
    context = ssl.create_default_context(cafile=str(deployment.directory / "ca.pem"))
    context.set_alpn_protocols(["jumpoint/1"])
    with socket.create_connection(address, timeout=10) as raw:
        refused = False
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"\x00" * 10)
                tls.recv(1)  # TLS 1.3: the server's alert arrives after the handshake
        except (ssl.SSLError, ConnectionResetError):
            refused = True
        assert refused
    # a slow-loris that never finishes its handshake is dropped too (handshake deadline)
    result = deployment.jump("items")
    assert result.returncode == 0, result.stderr
    session = deployment.open("web")
    tunnel_address(session.wait_for_event("ready"))
    assert server.popen.poll() is None
    wait_until(
        lambda: any("TLS" in line for line in server.stdout_lines),
        what="the Jumpoint to log the failed TLS handshake",
    )
