set -euo pipefail
tmp=$(mktemp -d /tmp/.hutch-copy.XXXXXX)
trap 'rm -rf -- "$tmp" "$HUTCH_TAR"' EXIT
tar -xf "$HUTCH_TAR" -C "$tmp" --no-same-owner
cd "$tmp"
shopt -s nullglob dotglob
src=${HUTCH_SRC%/}
src=${src#./}
[ -n "$src" ] || src=.
IFS=
matches=( $src )
if [ ${#matches[@]} -eq 0 ] || ! [ -e "${matches[0]}" -o -L "${matches[0]}" ]; then
    echo "no file matches '$HUTCH_SRC'" >&2
    exit 1
fi
owner=$HUTCH_OWNER
case "$owner" in *:*) ;; *) owner="$owner:" ;; esac
chown -R -h -- "$owner" "${matches[@]}"
if [ -n "$HUTCH_MODE" ]; then chmod -R -- "$HUTCH_MODE" "${matches[@]}"; fi
dest=$HUTCH_DEST
if [ ${#matches[@]} -eq 1 ] && [ ! -d "${matches[0]}" ] && [ "${dest%/}" = "$dest" ] && [ ! -d "$dest" ]; then
    mkdir -p -- "$(dirname -- "$dest")"
    cp -a -- "${matches[0]}" "$dest"
else
    mkdir -p -- "$dest"
    for m in "${matches[@]}"; do
        if [ -d "$m" ]; then cp -a -- "$m/." "$dest/"; else cp -a -- "$m" "$dest/"; fi
    done
fi
