"""A slot's network namespace is kept for the slot's next sandbox (docs/design.md, "Slot
networks"). Root inside must not be able to change it, and the next sandbox of the slot
must find nothing of the previous one in it.
"""

from __future__ import annotations

import contextlib

from e2b import Sandbox

from conftest import python


def sandbox_ip(sbx: Sandbox) -> str:
    out = sbx.commands.run("ip -4 -o addr show dev eth0").stdout
    return out.split()[3].split("/")[0]


def network_facts(sbx: Sandbox) -> str:
    return sbx.commands.run(
        "ip -o link show eth0 | cut -d' ' -f2-5; ip -4 -o addr show eth0 | cut -d' ' -f2-4; "
        "ip route; ip neigh show dev eth0; "
        "cat /proc/sys/net/ipv4/tcp_no_metrics_save /proc/sys/net/ipv4/ip_unprivileged_port_start"
    ).stdout


def test_root_inside_cannot_change_its_network(sandbox: Sandbox) -> None:
    before = network_facts(sandbox)
    for cmd in [
        "ip link add x0 type dummy",
        "ip addr add 10.201.255.5/32 dev eth0",
        "ip route add 198.51.100.0/24 dev eth0",
        "ip link set eth0 mtu 1280",
        "ip neigh add 10.201.255.9 lladdr 02:00:00:00:00:09 dev eth0",
        "ip neigh del $(ip route show default | cut -d' ' -f3) dev eth0",
        "ip link set eth0 down",
        "ip link set lo down",
        "sysctl -w net.ipv4.tcp_no_metrics_save=0",
    ]:
        r = sandbox.commands.run(cmd + " 2>&1; echo rc=$?", user="root")
        assert r.stdout.rstrip().endswith(("rc=1", "rc=2", "rc=255")), (cmd, r.stdout)
    assert network_facts(sandbox) == before
    # Netlink sockets for nftables open (ordinary programs probe them), but nothing
    # there answers to root inside: the namespace is not its own.
    out = python(
        sandbox,
        """
import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)  # NETLINK_NETFILTER
# NFT_MSG_NEWTABLE (subsystem 10, message 0), with an ack
hdr = struct.pack("=LHHLL", 20, (10 << 8) | 0, 0x1 | 0x4 | 0x400, 1, 0) + bytes(4)
s.send(hdr)
answer = s.recv(4096)
print(-struct.unpack_from("=i", answer, 16)[0])
""",
        user="root",
    )
    assert out.strip() == "1", out  # EPERM
    # The sandbox still works: ports below 1024 for everyone, ping.
    r = sandbox.commands.run(
        'python3 -c \'import socket; s = socket.socket(); s.bind(("0.0.0.0", 80)); print("bound")\''
    )
    assert r.stdout.strip() == "bound"


def test_the_next_sandbox_of_a_slot_finds_nothing_of_the_previous() -> None:
    first = Sandbox.create(template="base", timeout=120)
    ip = sandbox_ip(first)
    # Listeners on TCP, UDP and an abstract unix name, and connections out, left running.
    first.commands.run(
        "nohup python3 -m http.server 8123 >/dev/null 2>&1 & "
        "nohup python3 -c 'import socket, time; u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        'u.bind(("0.0.0.0", 8124)); a = socket.socket(socket.AF_UNIX); a.bind("\\0hutch-slot-test"); '
        "a.listen(); time.sleep(600)' >/dev/null 2>&1 &",
        user="root",
    )
    python(
        first,
        f"""
import socket, time
for _ in range(50):
    try:
        socket.create_connection(("{ip}", 8123), timeout=2).close()
        break
    except OSError:
        time.sleep(0.1)
""",
    )
    listening = first.commands.run("ss -Hlntux").stdout
    assert ":8123" in listening and ":8124" in listening and "@hutch-slot-test" in listening, listening
    # The probe's connection, closed by the client first, lingers in TIME-WAIT.
    lingering = first.commands.run("ss -Htan state time-wait").stdout
    assert ":8123" in lingering, lingering
    first.kill()

    # Slots are handed out lowest first: creates until one gets the freed slot back.
    held: list[Sandbox] = []
    same = None
    try:
        for _ in range(10):
            sbx = Sandbox.create(template="base", timeout=120)
            if sandbox_ip(sbx) == ip:
                same = sbx
                break
            held.append(sbx)
        assert same is not None, "the freed slot was never handed out again"
        # Every TCP state: the first sandbox's connections, closed when it was killed, would
        # linger (FIN-WAIT, TIME-WAIT) and show whom it talked to.
        out = same.commands.run("ss -Hlntux; echo --; ss -Htan; echo --; ip tcp_metrics show").stdout
        assert ":8123" not in out and ":8124" not in out and "hutch-slot-test" not in out, out
        assert "8123" not in out, out
        assert out.rstrip().endswith("--"), out  # no TCP metrics of the first sandbox's connections
        assert same.commands.run("ip -4 -o addr show eth0").stdout.split()[3] == ip + "/30"
    finally:
        for s in [*held, *([same] if same is not None else [])]:
            with contextlib.suppress(Exception):
                s.kill()
