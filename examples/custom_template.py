"""The seed's custom-template example: a sandbox from a template you built.

    python examples/custom_template.py [template-name]

The template name defaults to `my-custom-template` (the seed's); any template `hutch serve`
knows works, e.g. `code-interpreter-v1`.
"""

import sys

from hutch import Sandbox

template = sys.argv[1] if len(sys.argv) > 1 else "my-custom-template"

# Use the ID or name of the template
with Sandbox(template=template) as sandbox:
    # Sandbox starts with pre-installed packages/files
    execution = sandbox.run_code("import pandas; print(pandas.__version__)")
    print(execution.text)
    print(execution.stdout, end="")
