# Fail the build, not the first sandbox, if a kernel's pieces are missing.
for kernel in python3 bash deno r java; do
    test -s "/usr/local/share/jupyter/kernels/$kernel/kernel.json"
done
/opt/hutch/python/bin/python -c 'import ipykernel, IPython, numpy, pandas, matplotlib, PIL, scipy, seaborn, orjson, e2b_charts, bash_kernel, hutch_kernel_ext, hutch_bash_kernel'
/usr/local/bin/python3 -c 'import sys; assert sys.prefix == "/opt/hutch/python", sys.prefix'
Rscript -e 'library(IRkernel)'
/usr/local/bin/deno --version
java --list-modules | grep -q '^jdk.jshell@'
test -s /usr/local/share/jupyter/kernels/java/jjava.jar
test -s /usr/local/share/jupyter/kernels/java/jjava.jsa
