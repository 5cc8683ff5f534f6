# Code runs as `user` (uid 1000). The environment belongs to it, so that
# `pip install` (also `!pip install` in a kernel) works without sudo.
chown -R user:user /opt/hutch/python
# `python`, `python3`, `pip` and `pip3` are the environment's on any PATH
# (/usr/local/bin comes before /usr/bin). Not symlinks: Python finds its
# environment from the path it was started by, and that of a symlink is not
# the environment's.
for tool in python python3 pip pip3; do
    printf '#!/bin/sh\nexec /opt/hutch/python/bin/%s "$@"\n' "$tool" > "/usr/local/bin/$tool"
    chmod 755 "/usr/local/bin/$tool"
done
# Caches that would otherwise be made in every sandbox, as user: matplotlib's
# font list (about a second at the first `import matplotlib.pyplot`).
setpriv --reuid=user --regid=user --init-groups env HOME=/home/user USER=user \
    /opt/hutch/python/bin/python -c 'import matplotlib.pyplot'
rm -rf /opt/hutch/build /root/.cache /root/.npm
