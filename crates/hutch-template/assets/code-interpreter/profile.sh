# The code interpreter's Python environment first, so that the tools pip
# installs there are found.
case ":$PATH:" in
    *:/opt/hutch/python/bin:*) ;;
    *) PATH="/opt/hutch/python/bin:$PATH" ;;
esac
export PATH
