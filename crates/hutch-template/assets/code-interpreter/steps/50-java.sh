# JJava, a Java kernel built on JShell, is published on PyPI as a wheel that
# carries the kernel's jar; only the jar is needed (kernel.json runs it).
tmp=$(mktemp -d)
/opt/hutch/python/bin/python -m pip download --no-cache-dir --disable-pip-version-check \
    --no-input --no-deps --only-binary=:all: --dest "$tmp" jjava==1.0a8
/opt/hutch/python/bin/python -m zipfile -e "$tmp/jjava-1.0a8-py3-none-any.whl" "$tmp/wheel"
install -m 644 "$tmp/wheel/jjava-1.0a8.data/data/share/jupyter/kernels/java/jjava.jar" \
    /usr/local/share/jupyter/kernels/java/jjava.jar
rm -rf "$tmp"
