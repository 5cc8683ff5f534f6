# The seed's custom template: E2B's code-interpreter image with packages and files added.
# Build it once (the server must be running):
#
#     hutch template build --name my-custom-template --path examples/custom-template
#
# FROM e2bdev/code-interpreter is hutch's code-interpreter-v1. The packages below are in it
# already, so this RUN needs no network; new ones need the sandboxes' internet access.
FROM e2bdev/code-interpreter:latest

RUN pip install pandas numpy

COPY sales.csv /home/user/data/
COPY --chown=user:user --chmod=0644 helpers.py /home/user/
