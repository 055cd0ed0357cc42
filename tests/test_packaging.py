"""The repository is both a pip package and an ament_python ROS 2 package."""
import configparser
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "rlrc_runtime"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "std_msgs", "sensor_msgs", "geometry_msgs", "diagnostic_msgs"} <= deps
    for tag in ("version", "description", "license"):
        assert root.findtext(tag), f"package.xml lacks <{tag}>"


def test_setup_cfg_installs_scripts_where_ros2_run_looks():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["install"]["install_scripts"] == "$base/lib/rlrc_runtime"
    assert cfg["develop"]["script_dir"] == "$base/lib/rlrc_runtime"
    assert (ROOT / "resource" / "rlrc_runtime").is_file()


def test_wheel_carries_ament_marker_package_xml_and_entry_points(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("rlrc_runtime-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    data = [n for n in names if ".data/data/" in n]
    assert any(n.endswith("share/ament_index/resource_index/packages/rlrc_runtime") for n in data), data
    assert any(n.endswith("share/rlrc_runtime/package.xml") for n in data), data
    for pkg in ("rlrc_runtime/__init__.py", "export/model.py", "ros_nodes/__init__.py", "calibration/__init__.py"):
        assert pkg in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "rlrc-export = export.cli:main" in text and "rlrc-predict = rlrc_runtime.cli:main" in text
