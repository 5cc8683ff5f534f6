# The Python environment of the python3 and bash kernels, which is also the
# sandbox's python and pip. Wheels only, so no package code runs while the
# template is built, and each one must have a SHA-256 that python-lock.txt
# names (scripts/pin-python.py makes it): a wheel changed on the index, or on
# its way from it, fails the build.
/usr/bin/python3 -m venv /opt/hutch/python
pip="/opt/hutch/python/bin/python -m pip --no-cache-dir --disable-pip-version-check --no-input"
lock=/opt/hutch/python-lock.txt
# The pinned pip first, so the rest is installed by it rather than by the older
# one that Debian's ensurepip puts into new environments.
grep '^pip==' "$lock" > /opt/hutch/build/pip-lock.txt
$pip install --only-binary=:all: --require-hashes --no-deps -r /opt/hutch/build/pip-lock.txt
$pip install --only-binary=:all: --require-hashes --no-deps -r "$lock"
# The lock holds every dependency (--no-deps installs nothing else): check.
$pip check
# hutch's own modules: the IPython extension every kernel of this environment
# loads (see ipython_kernel_config.py) and the bash kernel's launcher.
site=$(/opt/hutch/python/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
for module in hutch_kernel_ext hutch_bash_kernel; do
    install -m 644 "/opt/hutch/build/$module.py" "$site/$module.py"
    /opt/hutch/python/bin/python -m compileall -q "$site/$module.py"
done
