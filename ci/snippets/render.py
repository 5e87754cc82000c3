"""Renders a Cobbler snippet with Cheetah, as Cobbler does.

usage: python render.py [--cobbler] SNIPPET [KEY=VALUE ...] > rendered

Plain mode (any python with Cheetah3/CT3): the snippet is compiled WITHOUT an
error catcher and with only the variables given, so a shell "$var" that was
not escaped as "\\$var" fails the render (NotFound) instead of slipping
through, or worse, silently picking up one of Cobbler's own variables such as
$arch.

--cobbler mode (a python with a Cobbler 3.x wheel, e.g. ci/peer's venv-3.3.10):
renders a one-line kickstart "$SNIPPET('name')" through Cobbler's own
CobblerTemplate the way templar.render_cheetah does (errorCatcher ListErrors,
the SNIPPET macro reading autoinstall_snippets_dir), with a search list that
also holds Cobbler variables our shell names could collide with (arch, ...).
Any error Cobbler's catcher lists fails the render.
"""
import os
import sys


def parse(argv):
    search = {}
    for kv in argv:
        key, _, value = kv.partition("=")
        # Cobbler 3.x settings are YAML booleans; 2.x used 1 and 0.
        search[key] = {"True": True, "False": False}.get(value, value)
    return search


def plain(path, search):
    from Cheetah.Template import Template
    with open(path) as f:
        source = f.read()
    template = Template(source=source, searchList=[search],
                        compilerSettings={"useStackFrame": False})
    return str(template)


def cobbler(path, search):
    from cobbler.template_api import CobblerTemplate
    table = {
        # Variables Cobbler always has that a careless shell "$arch",
        # "$breed" ... would pick up.
        "arch": "COBBLER-ARCH", "breed": "redhat", "os_version": "rhel9",
        "autoinstall_snippets_dir": os.path.dirname(os.path.abspath(path)),
    }
    table.update(search)
    table["template_universe"] = dict(table)
    raw = "#errorCatcher ListErrors\n$SNIPPET('%s')\n" % os.path.basename(path)
    klass = CobblerTemplate.compile(
        moduleName="cobbler.template_api", className="CobblerDynamicTemplate",
        source=raw, compilerSettings={"useStackFrame": False},
        baseclass=CobblerTemplate)
    template = klass(searchList=[table])
    out = str(template)
    errors = template.errorCatcher().listErrors()
    if errors:
        sys.exit("render.py: Cobbler listed template errors: %r" % (errors,))
    if "COBBLER-ARCH" in out:
        sys.exit("render.py: a shell $arch was substituted by Cobbler's $arch")
    return out


def main():
    args = sys.argv[1:]
    mode = plain
    if args and args[0] == "--cobbler":
        mode = cobbler
        args = args[1:]
    sys.stdout.write(mode(args[0], parse(args[1:])))


if __name__ == "__main__":
    main()
