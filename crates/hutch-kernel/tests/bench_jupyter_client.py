"""Baseline for tests/ipykernel_bench.rs `bench_against_jupyter_client`: raw jupyter_client.

Usage: python bench_jupyter_client.py roundtrip CONNECTION_FILE N
       python bench_jupyter_client.py heartbeat CONNECTION_FILE N
       python bench_jupyter_client.py startup ipc|tcp N
Prints one JSON object: the median and every sample, in milliseconds.
"""

import json
import statistics
import sys
import time

from jupyter_client import BlockingKernelClient, KernelManager


def run(kc: BlockingKernelClient, code: str) -> None:
    """execute_request, then wait for our iopub idle and the shell reply."""
    msg_id = kc.execute(code)
    while True:
        m = kc.get_iopub_msg(timeout=30)
        if (
            m["parent_header"].get("msg_id") == msg_id
            and m["msg_type"] == "status"
            and m["content"]["execution_state"] == "idle"
        ):
            break
    while kc.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != msg_id:
        pass


def roundtrip(conn_file: str, n: int) -> dict:
    kc = BlockingKernelClient(connection_file=conn_file)
    kc.load_connection_file()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    for _ in range(20):
        run(kc, "1+1")
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        run(kc, "1+1")
        samples.append((time.perf_counter() - t) * 1e3)
    kc.stop_channels()
    return {"median_ms": statistics.median(samples), "samples_ms": samples}


def heartbeat(conn_file: str, n: int) -> dict:
    """Echo round trips on the heartbeat socket: libzmq (pyzmq) on both ends."""
    import zmq

    kc = BlockingKernelClient(connection_file=conn_file)
    kc.load_connection_file()
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.connect(kc._make_url("hb"))
    for _ in range(100):
        sock.send(b"ping")
        sock.recv()
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        sock.send(b"ping")
        sock.recv()
        samples.append((time.perf_counter() - t) * 1e3)
    sock.close()
    return {"median_ms": statistics.median(samples), "samples_ms": samples}


def startup(transport: str, n: int) -> dict:
    samples = []
    for _ in range(n):
        km = KernelManager(transport=transport)
        t = time.perf_counter()
        km.start_kernel(extra_arguments=["--InteractiveShell.colors=NoColor"])
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        samples.append((time.perf_counter() - t) * 1e3)
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return {"median_ms": statistics.median(samples), "samples_ms": samples}


if __name__ == "__main__":
    mode, arg, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    modes = {"roundtrip": roundtrip, "heartbeat": heartbeat, "startup": startup}
    result = modes[mode](arg, count)
    print(json.dumps(result))
