"""Starts every kernel of the code-interpreter-v1 template from its kernel.json
and runs a cell in it; run inside the template (see sandbox.sh) by its own
Python, /opt/hutch/python, which has jupyter_client.

Prints one line per kernel: how long from spawn to ready (a kernel_info
request answered, its status seen on IOPub), and how long each cell took. Exits 1 if any kernel fails its check.
"""

import json
import os
import queue
import subprocess
import sys
import tempfile
import time

from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

KERNELS_DIR = "/usr/local/share/jupyter/kernels"

PIL_CELL = """
import numpy
from PIL import Image
Image.fromarray((numpy.random.rand(16, 16, 3) * 255).astype("uint8")).show()
"""

# kernel name -> [(code, check(outputs) -> None or a complaint)]
CHECKS = {
    "python3": [
        (
            "import numpy, pandas, matplotlib, PIL, scipy, seaborn, orjson, e2b_charts\n"
            "pandas.DataFrame({'a': [1, 2, 3]})",
            lambda out: None
            if any(o.get("data", {}).get("e2b/data") == {"a": [1, 2, 3]} for o in out)
            else "no e2b/data for a DataFrame",
        ),
        (
            "import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.show()",
            lambda out: None
            if any(
                "image/png" in o.get("data", {})
                and o["data"].get("e2b/chart", {}).get("type") == "line"
                for o in out
            )
            else "no image/png with an e2b/chart line chart for plt.show()",
        ),
        (
            PIL_CELL,
            lambda out: None
            if any("image/png" in o.get("data", {}) for o in out)
            else "Image.show() displayed no image/png",
        ),
        (
            "!pip --version",
            lambda out: None
            if "/opt/hutch/python/" in stdout(out)
            else "`!pip` is not the environment's pip",
        ),
    ],
    "bash": [
        (
            "echo $((6 * 7)); whoami",
            lambda out: None if stdout(out).split() == ["42", "user"] else "wrong output",
        ),
    ],
    "deno": [
        (
            "import { readFileSync } from 'fs'\n"
            "const kind: string = typeof readFileSync\n"
            "await Promise.resolve(kind)",
            lambda out: None if result_text(out) == '"function"' else "wrong result",
        ),
    ],
    "r": [
        (
            "library(IRkernel); cat(6 * 7)",
            lambda out: None if stdout(out).strip() == "42" else "wrong output",
        ),
    ],
    "java": [
        (
            "System.out.println(6 * 7);",
            lambda out: None if stdout(out).strip() == "42" else "wrong output",
        ),
    ],
}


def stdout(outputs):
    return "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")


def result_text(outputs):
    for o in outputs:
        if "execution_count" in o and "data" in o:
            return o["data"].get("text/plain")
    return None


def start(name, workdir):
    with open(os.path.join(KERNELS_DIR, name, "kernel.json")) as f:
        spec = json.load(f)
    conn = os.path.join(workdir, f"{name}.json")
    write_connection_file(conn, ip="127.0.0.1", key=os.urandom(16).hex().encode())
    argv = [a.replace("{connection_file}", conn) for a in spec["argv"]]
    env = dict(os.environ, **spec.get("env", {}))
    log = open(os.path.join(workdir, f"{name}.log"), "wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, env=env, cwd=os.environ["HOME"], stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    client = BlockingKernelClient(connection_file=conn)
    client.load_connection_file()
    client.start_channels()
    # Ready means a kernel_info request's status arrived on IOPub: a reply on
    # the shell socket alone does not prove the IOPub subscription is
    # connected yet, and a fast first cell's output would then be lost.
    asked = set()
    while True:
        asked.add(client.kernel_info())
        try:
            msg = client.get_iopub_msg(timeout=0.05)
        except queue.Empty:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with {proc.returncode}") from None
            if time.monotonic() - started > 120:
                raise RuntimeError("not ready in 120 s") from None
            continue
        if msg["parent_header"].get("msg_id") in asked:
            ready = time.monotonic() - started
            # Let the remaining kernel_info replies and statuses go by.
            time.sleep(0.2)
            for get in (client.get_shell_msg, client.get_iopub_msg):
                while True:
                    try:
                        get(timeout=0.01)
                    except queue.Empty:
                        break
            return proc, client, ready


def run(client, code):
    msg_id = client.execute(code)
    outputs = []
    while True:
        try:
            msg = client.get_iopub_msg(timeout=120)
        except queue.Empty:
            raise RuntimeError(f"no output for 120 s; so far {outputs}") from None
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "status" and msg["content"]["execution_state"] == "idle":
            # Deno (2.9) sometimes publishes a cell's result a fraction of
            # a millisecond after its idle status: listen a little longer.
            idle_at = time.monotonic()
            while time.monotonic() - idle_at < 0.05:
                try:
                    late = client.get_iopub_msg(timeout=0.05)
                except queue.Empty:
                    break
                if late["parent_header"].get("msg_id") == msg_id and late["msg_type"] in (
                    "stream",
                    "execute_result",
                    "display_data",
                ):
                    outputs.append(late["content"])
            return outputs
        if kind == "error":
            raise RuntimeError(f"{msg['content']['ename']}: {msg['content']['evalue']}")
        if kind in ("stream", "execute_result", "display_data"):
            outputs.append(msg["content"])


def main():
    names = sys.argv[1:] or list(CHECKS)
    failed = False
    with tempfile.TemporaryDirectory() as workdir:
        for name in names:
            proc = None
            try:
                proc, client, start_s = start(name, workdir)
                cell_s = []
                for code, check in CHECKS[name]:
                    t = time.monotonic()
                    outputs = run(client, code)
                    complaint = check(outputs)
                    cell_s.append(time.monotonic() - t)
                    if complaint:
                        raise RuntimeError(f"{complaint}; cell {code!r}; outputs {outputs}")
                client.shutdown()
                note = ""
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    # JJava answers shutdown_request but keeps running once
                    # it has run code; the agent has to end it.
                    proc.terminate()
                    proc.wait(timeout=10)
                    note = "; kept running after shutdown_reply, ended by SIGTERM"
                cells = ", ".join(f"{s * 1000:.0f}" for s in cell_s)
                print(f"kernel {name}: ok, start {start_s * 1000:.0f} ms, cells {cells} ms{note}")
            except Exception as e:
                failed = True
                log = os.path.join(workdir, f"{name}.log")
                tail = open(log, errors="replace").read()[-2000:] if os.path.exists(log) else ""
                print(f"kernel {name}: FAILED: {type(e).__name__}: {e}\n{tail}")
            finally:
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait()
            sys.stdout.flush()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
