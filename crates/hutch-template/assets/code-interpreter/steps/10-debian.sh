# From Debian's archive: Node.js and npm (npm fetches Deno below, and users
# expect node and npm in the sandbox), R with IRkernel for the r kernel, and a
# JDK for the java kernel (JJava runs JShell, which only the JDK has).
apt-get update -q
apt-get install -y -q --no-install-recommends \
    nodejs npm \
    r-base-core r-cran-irkernel \
    openjdk-17-jdk-headless
