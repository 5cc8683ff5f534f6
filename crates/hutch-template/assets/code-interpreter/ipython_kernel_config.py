# IPython configuration of every kernel run by /opt/hutch/python (IPython reads
# <sys.prefix>/etc/ipython/ before the user's own profile).
c = get_config()  # noqa: F821

# hutch's extension: e2b/data for DataFrames, e2b/chart for matplotlib figures,
# application/json for lists and dicts, PIL's Image.show() into the output.
c.InteractiveShellApp.extensions = ["hutch_kernel_ext"]

# Tracebacks and reprs as plain text, as E2B's sandboxes return them.
c.InteractiveShell.colors = "NoColor"
# Long lists are not cut short in text/plain.
c.PlainTextFormatter.max_seq_length = 0
