# JJava, a Java kernel built on JShell, is published on PyPI as a wheel that
# carries the kernel's jar; only the jar is needed (kernel.json runs it).
# The wheel's SHA-256 is pinned here, as the Python environment's are.
tmp=$(mktemp -d)
echo "jjava==1.0a8 --hash=sha256:b86ddf2eee6037a33a0adc2ac2f318a94638f42eefaeeeb13db381587e5f2a69" \
    > "$tmp/jjava.txt"
/opt/hutch/python/bin/python -m pip download --no-cache-dir --disable-pip-version-check \
    --no-input --no-deps --only-binary=:all: --require-hashes --dest "$tmp" -r "$tmp/jjava.txt"
/opt/hutch/python/bin/python -m zipfile -e "$tmp/jjava-1.0a8-py3-none-any.whl" "$tmp/wheel"
install -m 644 "$tmp/wheel/jjava-1.0a8.data/data/share/jupyter/kernels/java/jjava.jar" \
    /usr/local/share/jupyter/kernels/java/jjava.jar
rm -rf "$tmp"
