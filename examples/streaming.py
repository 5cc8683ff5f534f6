"""The seed's streaming example: async callbacks see output as it happens and save the chart.

Run it against a `hutch serve`:  python examples/streaming.py
The chart is saved as streamed_chart_<timestamp>.png in the current directory.
"""

import asyncio
import base64
from typing import Any

from hutch import Execution, Sandbox


async def handle_stdout(log: dict[str, Any]) -> None:
    print(f"STDOUT: {log.get('line', '').strip()}")


async def handle_stderr(log: dict[str, Any]) -> None:
    print(f"STDERR: {log.get('line', '').strip()}")


async def handle_result(result_data: dict[str, Any]) -> None:
    # result_data reads like a dictionary of the Result model
    print(f"RESULT Received (Type: {result_data.get('mime_type')})")
    if result_data.get("mime_type") == "image/png" and result_data.get("png"):
        try:
            png_data = base64.b64decode(result_data["png"])
            filename = f"streamed_chart_{result_data.get('timestamp', 'unknown')}.png"
            with open(filename, "wb") as f:  # noqa: ASYNC230 - the seed's example, as written
                f.write(png_data)
            print(f"Saved streamed chart to {filename}")
        except Exception as e:
            print(f"Error saving streamed PNG: {e}")
    elif result_data.get("text"):
        print(f"Result Text: {result_data['text']}")


async def main() -> None:
    code_with_plot = """
import matplotlib.pyplot as plt
import numpy as np
import time

print("Generating plot...")
time.sleep(1) # Simulate work

x = np.linspace(0, 2 * np.pi, 100)
y = np.sin(x)

plt.figure()
plt.plot(x, y)
plt.title('Streamed Sine Wave')
plt.show() # This generates a result

print("Plot generated.")
time.sleep(1)
print("Calculation finished.", file=__import__('sys').stderr)
"""
    try:
        async with Sandbox() as sandbox:
            print("Starting execution with streaming...")
            execution: Execution = await sandbox.run_code(
                code_with_plot,
                on_stdout=handle_stdout,  # type: ignore[arg-type]
                on_stderr=handle_stderr,  # type: ignore[arg-type]
                on_results=handle_result,  # type: ignore[arg-type]
            )
            print("\nExecution finished.")
            if execution.error:
                print(f"Execution Error: {execution.error.name} - {execution.error.value}")
    except Exception as e:
        print(f"An error occurred: {e}")
        raise SystemExit(1) from e


if __name__ == "__main__":
    asyncio.run(main())
