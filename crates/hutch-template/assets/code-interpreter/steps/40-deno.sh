# Deno's Jupyter kernel serves JavaScript and TypeScript. npm's deno package
# takes its binary from the @deno/linux-x64-glibc package (arm64: -arm64-),
# which is on npm too: nothing is downloaded from anywhere else.
npm install --global --no-audit --no-fund --no-update-notifier deno@2.9.6
rm -rf /root/.npm
/usr/local/bin/deno --version
