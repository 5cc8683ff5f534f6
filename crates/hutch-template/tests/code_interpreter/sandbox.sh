#!/bin/sh
# usage: sandbox.sh ROOTFS COMMAND...
#
# Runs COMMAND roughly as a hutch sandbox would run it: as `user` (uid 1000)
# in a user namespace with the sandboxes' id mapping (0..65535 inside are
# 1000000.. outside), chrooted into a throwaway overlay of the shifted
# template tree ROOTFS, with /proc and /dev. Every mount lives in a private
# mount namespace and vanishes with it, so nothing is written to ROOTFS and
# nothing stays mounted. Needs root and util-linux (unshare, setpriv).
set -eu
root=$1
shift
scratch=$(mktemp -d /tmp/hutch-ci-check.XXXXXX)
status=0
unshare --mount --propagation private /bin/sh -eu -c '
    root=$1 scratch=$2
    shift 2
    mount -t tmpfs -o mode=755 tmpfs "$scratch"
    mkdir "$scratch/upper" "$scratch/work" "$scratch/merged"
    mount -t overlay overlay \
        -o "lowerdir=$root,upperdir=$scratch/upper,workdir=$scratch/work" "$scratch/merged"
    mount -t proc proc "$scratch/merged/proc"
    mount --rbind /dev "$scratch/merged/dev"
    # The child becomes host uid 1000000, enters a new user namespace and
    # waits (on fd 3) until its id maps are written from out here; it is
    # then root inside, and its next exec (chroot) has root'"'"'s capabilities
    # there. Root writes the maps itself, so no newuidmap is needed.
    mkfifo "$scratch/go"
    exec 3<>"$scratch/go"
    # A background command would get /dev/null as its stdin; it gets ours.
    exec 4<&0
    setpriv --reuid=1000000 --regid=1000000 --clear-groups \
        unshare --user /bin/sh -c "read _ <&3; exec 3<&-; exec \"\$@\"" sandbox \
        chroot "$scratch/merged" \
        setpriv --reuid=1000 --regid=1000 --init-groups \
        env -i HOME=/home/user USER=user LOGNAME=user LANG=C.UTF-8 \
        PATH=/opt/hutch/python/bin:/usr/local/bin:/usr/bin:/bin "$@" <&4 &
    child=$!
    own=$(readlink /proc/self/ns/user)
    while [ "$(readlink /proc/$child/ns/user)" = "$own" ]; do sleep 0.01; done
    echo "0 1000000 65536" > /proc/$child/uid_map
    echo "0 1000000 65536" > /proc/$child/gid_map
    echo go >&3
    exec 3>&-
    wait $child
' sandbox "$root" "$scratch" "$@" || status=$?
rmdir "$scratch"
exit "$status"
