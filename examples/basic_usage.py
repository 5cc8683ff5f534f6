"""The seed's basic example: state persists between `run_code` calls.

Run it against a `hutch serve` (HUTCH_API_KEY or E2B_API_KEY set):  python examples/basic_usage.py
"""

from hutch import Sandbox

# Ensure HUTCH_API_KEY (or E2B_API_KEY) is set, or pass api_key to Sandbox()

try:
    # Create and automatically manage the sandbox lifecycle
    with Sandbox() as sandbox:
        # Execute the first line of code (stateful)
        sandbox.run_code("x = 1")

        # Execute the second line, which uses the state from the first execution
        execution = sandbox.run_code("x += 1; x")

        # Access the textual result of the second execution
        if execution and hasattr(execution, "text"):  # type: ignore[truthy-bool]  # the seed's check, as written
            print(f"Result: {execution.text}")  # Expected output: Result: 2
        else:
            print("Execution did not return a text result.")
        # Access logs if needed
        if execution and hasattr(execution, "logs"):  # type: ignore[truthy-bool]  # the seed's check, as written
            print(f"Stdout: {execution.logs.stdout}")
            print(f"Stderr: {execution.logs.stderr}")

except Exception as e:
    print(f"An error occurred: {e}")
    raise SystemExit(1) from e

# The 'with' statement ensures sandbox.close() is called automatically
