# A class-data sharing archive of what the java kernel loads, made by running
# it once (see java_cds.py); kernel.json points the JVM at it.
/opt/hutch/python/bin/python /opt/hutch/build/java_cds.py /usr/local/share/jupyter/kernels/java/kernel.json
chmod 644 /usr/local/share/jupyter/kernels/java/jjava.jsa
