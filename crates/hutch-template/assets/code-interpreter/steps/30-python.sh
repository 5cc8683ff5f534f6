# The Python environment of the python3 and bash kernels, which is also the
# sandbox's python and pip. Wheels only: nothing is compiled during the build.
/usr/bin/python3 -m venv /opt/hutch/python
pip="/opt/hutch/python/bin/python -m pip --no-cache-dir --disable-pip-version-check --no-input"
# A pinned pip first, so the rest is resolved by it rather than by the older
# one that Debian's ensurepip puts into new environments.
$pip install --only-binary=:all: "$(grep -x 'pip==[0-9.]*' /opt/hutch/python-requirements.txt)"
$pip install --only-binary=:all: \
    -r /opt/hutch/python-requirements.txt -c /opt/hutch/python-constraints.txt
# hutch's own modules: the IPython extension every kernel of this environment
# loads (see ipython_kernel_config.py) and the bash kernel's launcher.
site=$(/opt/hutch/python/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
for module in hutch_kernel_ext hutch_bash_kernel; do
    install -m 644 "/opt/hutch/build/$module.py" "$site/$module.py"
    /opt/hutch/python/bin/python -m compileall -q "$site/$module.py"
done
