"""The seed's custom-template example: a sandbox from a template you built.

Build the template first (once; `hutch serve` must be running):

    hutch template build --name my-custom-template --path examples/custom-template

then run `python examples/custom_template.py`. Only the import differs from the seed.
"""

from hutch import Sandbox

# Use the ID or name provided after 'e2b template build'
with Sandbox(template="my-custom-template") as sandbox:
    # Sandbox starts with pre-installed packages/files
    execution = sandbox.run_code("import pandas; print(pandas.__version__)")
    print(execution.text)

# Not in the seed: print() writes to stdout, which is not a result, so `execution.text` above
# is None (on E2B too). The version is in the execution's stdout.
print("".join(execution.logs.stdout), end="")
