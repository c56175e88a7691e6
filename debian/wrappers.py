#!/usr/bin/python3
"""Write the package's executables into DESTDIR, from hapack install's own table.

The same list of agents and commands as 'hapack install' (hapack.install.entries),
with two differences: the interpreter is Debian's /usr/bin/python3 with hapack in
/usr/lib/python3/dist-packages, and the commands go to /usr/sbin. The
cluster-glue plugin lives in /usr/libexec/hapack: its directory is
multiarch (/usr/lib/<triplet>/stonith/plugins/external), which an
Architecture: all package cannot ship; postinst links it there.

    PYTHONPATH=<built dist-packages> python3 debian/wrappers.py DESTDIR
"""

import os
import sys
import tempfile

from hapack import install

PYTHON = "/usr/bin/python3"
PATHS = ["/usr/lib/python3/dist-packages"]
GLUE_DIR = "/usr/lib/stonith/plugins/external"  # Debian's cluster-glue


def main(destdir):
    with tempfile.TemporaryDirectory() as empty:  # no glue dir there: the generic path
        found = install.entries(empty, "/usr/lib/ocf", command_dir="/usr/sbin")
    for path, module, what in found:
        if os.path.dirname(path) in install.GLUE_DIRS:
            path = os.path.join(GLUE_DIR, os.path.basename(path))
        target = os.path.join(destdir, path.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        text = install.wrapper(module, what, python=PYTHON, paths=PATHS)
        text = text.replace("installed by 'hapack install'", "installed by the hapack package")
        with open(target, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(target, 0o755)
        print(f"{path}: {what}")


if __name__ == "__main__":
    main(sys.argv[1])
