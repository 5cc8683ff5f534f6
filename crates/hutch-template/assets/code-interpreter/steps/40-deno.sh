# Deno's Jupyter kernel serves JavaScript and TypeScript. Its binary is npm's
# @deno/linux-<arch>-glibc package (what the `deno` package's install script
# would link), fetched with `npm pack`, which runs no package scripts: nothing
# from the registry runs while the template is built. The archive is checked
# against the SHA-512 pinned here (npm's integrity of that version).
case "$(uname -m)" in
    x86_64) arch=x64 sum=de67784ca2c2bb3b0b0e67cea02e4a37b34065ac525643209bae2f83a7e80f4d090400c2a584b6ff942a5dfce09cfe59433de22cff6f05026d120735d7a380a1 ;;
    aarch64) arch=arm64 sum=a68aa1a07f41de7625a2280430f4f9b7c1d8fb005e8ae79ad409f943b7ea809ccfd126265aca12fe852758efe9122038a1fcc8072d4496dfe29f9f312adc44a1 ;;
    *) echo "no Deno build for $(uname -m)" >&2; exit 1 ;;
esac
tgz="deno-linux-$arch-glibc-2.9.6.tgz"
dir=$(mktemp -d)
cd "$dir"
npm pack --silent --no-update-notifier "@deno/linux-$arch-glibc@2.9.6" >/dev/null
echo "$sum  $tgz" | sha512sum --check --quiet
tar -xzf "$tgz" package/deno
install -m 0755 package/deno /usr/local/bin/deno
cd /
rm -rf "$dir" /root/.npm
/usr/local/bin/deno --version
