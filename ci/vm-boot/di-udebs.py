#!/usr/bin/env python3
"""The udebs d-i's install path needs that the mirror apt uses does not
serve (404), made from Debian's own packages of the same version.
Used by ci/vm-boot/di-mirror.sh (di_udebs); nothing here downloads.

  di-udebs.py plan UDEB_INDEX DEB_INDEX MISSING INITRD_STATUS
      Prints one line per udeb to make, closing ROOTS' Depends over what
      the mirror lacks and the initrd does not carry:
        repack UDEB DEB=VERSION[,LIBDEB=VERSION...]
                                  from the same-version deb of the same source
                                  (and the shared libraries of LIBDEBs)
        build UDEB SOURCE VERSION from the source package
  di-udebs.py repack UDEB_INDEX UDEB OUT_DIR DEB_FILE [LIBDEB_FILE...]
      Writes OUT_DIR/UDEB_VERSION_ARCH.udeb: the deb's files (only its
      shared libraries for a library udeb, no documentation for the others)
      and the LIBDEBs' shared libraries,
      under the udeb's own control fields from d-i's Packages index.
"""
import os
import re
import subprocess
import sys
import tempfile

# What partman's atomic recipe on a BIOS disk, base-installer, apt-setup,
# grub-installer and finish-install reach for; their Depends come along.
ROOTS = [
    "partman-basicfilesystems", "partman-basicmethods", "partman-ext3",
    "partman-target", "partman-utils", "parted-udeb", "libparted2-udeb",
    "libparted-fs-resize0-udeb", "e2fsprogs-udeb", "dosfstools-udeb",
    "di-utils-mapdevfs", "debootstrap-udeb", "apt-setup-udeb",
    "apt-mirror-setup", "clock-setup", "tzsetup-udeb", "user-setup-udeb",
    "finish-install", "grub-installer", "os-prober-udeb",
]
# udebs whose files are a part of another binary package of their source.
FROM_DEB = {"grub-mount-udeb": ("grub-common", ["usr/bin/grub-mount"])}
# A tool udeb's binaries link shared libraries its real udeb carries itself
# and no udeb provides: those come from these debs of the same source.
BUNDLED_LIBS = {"e2fsprogs-udeb": ["libext2fs2", "libcom-err2", "libss2"]}
# Sources whose deb of the udeb's name is the target system's, not d-i's.
BUILD_ONLY = {"user-setup"}
# Control fields of the index that belong to the archive, not the package.
ARCHIVE_FIELDS = {"Filename", "Size", "MD5sum", "SHA1", "SHA256", "SHA512",
                  "Description-md5"}


def stanzas(path):
    """Packages-format stanzas as (field order, dict) per package name."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for block in f.read().split("\n\n"):
            fields, order, last = {}, [], None
            for line in block.splitlines():
                if line[:1] in (" ", "\t") and last:
                    fields[last] += "\n" + line
                    continue
                m = re.match(r"^([A-Za-z0-9-]+):\s?(.*)$", line)
                if m:
                    last = m.group(1)
                    fields[last] = m.group(2)
                    order.append(last)
            if "Package" in fields:
                out[fields["Package"]] = (order, fields)
    return out


def names(field):
    """The first alternative's name of each relation in a Depends field."""
    for rel in field.split(","):
        rel = rel.strip()
        if rel:
            yield rel.split("|")[0].strip().split(" ")[0]


def plan(udeb_index, deb_index, missing_path, status_path):
    udebs, debs = stanzas(udeb_index), stanzas(deb_index)
    missing = set(open(missing_path, encoding="utf-8").read().split())
    initrd = set()
    for _, f in stanzas(status_path).values():
        initrd.add(f["Package"])
        initrd.update(names(f.get("Provides", "")))
    provides = {}
    for name, (_, f) in udebs.items():
        for p in names(f.get("Provides", "")):
            provides.setdefault(p, []).append(name)
    need, todo = [], list(ROOTS)
    while todo:
        name = todo.pop(0)
        if name in need or name in initrd or name not in udebs:
            continue
        if name in missing:
            need.append(name)
        for dep in names(udebs[name][1].get("Depends", "")):
            # A virtual package: the provider the roots name, if one does.
            cands = [dep] if dep in udebs else sorted(
                provides.get(dep, []), key=lambda c: c not in ROOTS)
            if any(c in initrd or (c in udebs and c not in missing) for c in cands):
                continue
            todo.extend(cands[:1])
    for name in need:
        f = udebs[name][1]
        # "Source: NAME (VERSION)" when a binNMU made the versions differ.
        m = re.match(r"^(\S+)(?: \((\S+)\))?$", f.get("Source", name))
        source, version = m.group(1), f["Version"]
        source_version = m.group(2) or version
        deb = FROM_DEB.get(name, (name[:-len("-udeb")] if name.endswith("-udeb") else None, None))[0]
        if source not in BUILD_ONLY and deb in debs and debs[deb][1]["Version"] == version:
            extra = [f"{d}={debs[d][1]['Version']}" for d in BUNDLED_LIBS.get(name, [])]
            print("repack", name, ",".join([f"{deb}={version}"] + extra))
        else:
            print("build", name, source, source_version)


def is_shared_lib(rel):
    return re.search(r"(^|/)lib[^/]*\.so(\.[0-9.]+)?$", rel) is not None


def keep(udeb, rel):
    """Whether the deb's file at rel (relative, no leading ./) goes in."""
    if udeb in FROM_DEB:
        return rel in FROM_DEB[udeb][1]
    if udeb.startswith("lib"):
        return is_shared_lib(rel)
    return not re.match(r"^usr/share/(doc|man|info|locale|lintian|bug|bash-completion)(/|$)", rel)


def repack(udeb_index, udeb, out_dir, deb_file, *lib_debs):
    order, fields = stanzas(udeb_index)[udeb]
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "udeb")
        os.makedirs(os.path.join(dst, "DEBIAN"))
        for n, deb in enumerate((deb_file,) + lib_debs):
            src = os.path.join(tmp, f"deb{n}")
            subprocess.run(["dpkg-deb", "-x", deb, src], check=True)
            carried = 0
            for top, _dirs, files in os.walk(src):
                for f in files:
                    path = os.path.join(top, f)
                    rel = os.path.relpath(path, src)
                    if is_shared_lib(rel) if n else keep(udeb, rel):
                        os.makedirs(os.path.join(dst, os.path.dirname(rel)), exist_ok=True)
                        os.rename(path, os.path.join(dst, rel))
                        carried += 1
            if carried == 0:
                sys.exit(f"di-udebs: {deb} has no file {udeb} would carry")
        with open(os.path.join(dst, "DEBIAN", "control"), "w", encoding="utf-8") as c:
            for k in order:
                if k not in ARCHIVE_FIELDS:
                    c.write(f"{k}: {fields[k]}\n")
        # dpkg-deb's own name: Package_Version_Architecture.udeb.
        name = f"{udeb}_{re.sub(r'^[0-9]+:', '', fields['Version'])}_{fields['Architecture']}.udeb"
        subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "-b", dst,
                        os.path.join(out_dir, name)], check=True, stdout=subprocess.DEVNULL)


def main(argv):
    if len(argv) == 6 and argv[1] == "plan":
        plan(*argv[2:])
    elif len(argv) >= 6 and argv[1] == "repack":
        repack(*argv[2:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
