"""Builds and installs the small plugin that lets the secure node create its `.security` index.

Native users, roles and API keys live in that index, and its settings name analysis components of
Elasticsearch's analysis-common module, which Maven Central's integ-test-zip distribution lacks and
nothing reachable publishes. `SecurityIndexAnalysisPlugin.java` registers Lucene's own classes
(in the distribution's lib/) under those names; it is compiled here against the distribution's jars,
so nothing is downloaded. Needs a JDK's `javac`.
"""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from importlib import resources
from pathlib import Path

from tether.stack.health import StackError

PLUGIN_NAME = "tether-security-index-analysis"
SOURCE = "SecurityIndexAnalysisPlugin.java"
CLASS_NAME = "dev.tether.securityindexanalysis.SecurityIndexAnalysisPlugin"


def plugin_installed(home: Path) -> bool:
    return (home / "plugins" / PLUGIN_NAME / "plugin-descriptor.properties").exists()


def install_security_index_analysis(home: Path, version: str, build_dir: Path, env: dict[str, str]) -> None:
    """Compile the plugin against `home`'s jars and install it with `bin/elasticsearch-plugin`, once."""
    if plugin_installed(home):
        return
    archive = build_plugin_zip(home, version, build_dir, env)
    tool = str(home / "bin" / "elasticsearch-plugin")
    _run([tool, "install", "--batch", archive.resolve().as_uri()], env, home)


def build_plugin_zip(home: Path, version: str, build_dir: Path, env: dict[str, str]) -> Path:
    """The plugin's zip (its jar and plugin-descriptor.properties) in `build_dir`; reads `home` only."""
    javac = shutil.which("javac")
    if javac is None:
        raise StackError("the secure stack needs a JDK's javac to build its security-index analysis plugin")
    shutil.rmtree(build_dir, ignore_errors=True)
    classes = build_dir / "classes"
    classes.mkdir(parents=True)
    source = build_dir / SOURCE
    source.write_text(resources.files("tether.stack").joinpath(SOURCE).read_text())
    class_path = ":".join(str(jar) for jar in sorted((home / "lib").glob("*.jar")))
    _run([javac, "--release", "17", "-d", str(classes), "-cp", class_path, str(source)], env, home)
    archive = build_dir / f"{PLUGIN_NAME}.zip"
    with zipfile.ZipFile(archive, "w") as plugin_zip:
        plugin_zip.writestr(f"{PLUGIN_NAME}.jar", _jar_bytes(classes, build_dir))
        plugin_zip.writestr("plugin-descriptor.properties", _descriptor(version))
    return archive


def _jar_bytes(classes: Path, build_dir: Path) -> bytes:
    jar = build_dir / f"{PLUGIN_NAME}.jar"
    with zipfile.ZipFile(jar, "w") as out:
        for path in sorted(classes.rglob("*.class")):
            out.write(path, path.relative_to(classes).as_posix())
    return jar.read_bytes()


def _descriptor(version: str) -> str:
    return (
        "description=Lucene's pattern_capture, unique and uax_url_email for the .security index\n"
        f"version={version}\n"
        f"name={PLUGIN_NAME}\n"
        f"classname={CLASS_NAME}\n"
        "java.version=17\n"
        f"elasticsearch.version={version}\n"
    )


def _run(argv: list[str], env: dict[str, str], cwd: Path) -> None:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, cwd=cwd)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise StackError(f"building the security-index analysis plugin: {Path(argv[0]).name} failed:\n{tail}")
