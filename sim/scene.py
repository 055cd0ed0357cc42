"""The tabletop scene as MJCF: a table, a mocap-driven parallel-jaw gripper, object slots, a camera.

Why a mocap-driven gripper and not an arm: the policies this benchmark serves (OpenVLA/Bridge
style) act in end-effector space, so an arm would only add inverse kinematics, joint limits and
self-collisions that neither the policy nor the scripted experts can see. The hand is a free
body welded to a mocap target (the Meta-World / robosuite pattern) rather than being the mocap
body itself: the weld is a soft constraint, so pressing on the table or on a block gives finite
contact forces instead of a kinematic body tunnelling through everything. Gravity compensation
on the hand and fingers keeps the weld from sagging, so the hand follows its target within a
control step.

The model is compiled once per environment. Per-episode variety (which objects, colours, poses,
camera and light shifts) is applied by editing `MjModel` fields in place, never by recompiling,
because recompiling would also mean a new OpenGL context per episode. Objects an episode does not
use are "parked": moved far off the table with collisions off and gravity compensated, so they
cost the solver nothing and never enter the camera view.

Conventions: world z is up and the table top is the plane z = 0. The agent-view camera sits on
the -x side looking towards +x, so image-left is world +y and image-up (far) is world +x.
"""
from __future__ import annotations

# Geometry, in metres. Half-sizes as MuJoCo expects them.
BLOCK_HALF = 0.02  # 4 cm cube
CYLINDER_RADIUS = 0.02
CYLINDER_HALF_HEIGHT = 0.025
BAR_HALF = (0.045, 0.017, 0.017)  # long along its own x; grasped across its y
PLATE_RADIUS = 0.055
PLATE_HALF_HEIGHT = 0.005
PLATE_TOP = 2 * PLATE_HALF_HEIGHT

# Height of each object's centre when resting upright on the table.
REST_Z: dict[str, float] = {
    "block": BLOCK_HALF,
    "cylinder": CYLINDER_HALF_HEIGHT,
    "bar": BAR_HALF[2],
    "plate": PLATE_HALF_HEIGHT,
}
# Radius of the object's footprint, used to keep sampled objects apart.
FOOTPRINT: dict[str, float] = {
    "block": BLOCK_HALF * 1.415,
    "cylinder": CYLINDER_RADIUS,
    "bar": (BAR_HALF[0] ** 2 + BAR_HALF[1] ** 2) ** 0.5,
    "plate": PLATE_RADIUS,
}
# How many bodies of each kind the model holds; an episode uses a subset, the rest are parked.
SLOT_COUNTS: dict[str, int] = {"block": 5, "cylinder": 3, "bar": 3, "plate": 2}
MOVABLE_KINDS = ("block", "cylinder", "bar")

# Gripper. Each finger slides along the hand's y axis; its inner face is at +-q, q in [0, FINGER_MAX].
FINGER_MAX = 0.045  # fully open gap 9 cm
FINGER_HALF = (0.02, 0.006, 0.025)  # 4 cm wide pads so a closed gripper also pushes squarely
EE_START = (0.2, 0.0, 0.14)

# Time: 2 ms physics steps, 25 per control step, so the policy acts at 20 Hz.
PHYSICS_TIMESTEP = 0.002
SUBSTEPS = 25
CONTROL_DT = PHYSICS_TIMESTEP * SUBSTEPS

# Nominal agent-view camera (look-at form, so OOD shifts can perturb eye and target).
CAMERA_EYE = (-0.40, 0.0, 0.45)
CAMERA_TARGET = (0.08, 0.0, 0.0)
CAMERA_FOVY = 45.0
TABLE_RGBA = (0.72, 0.70, 0.66, 1.0)
LIGHT_DIR = (0.3, 0.2, -1.0)
LIGHT_DIFFUSE = (0.7, 0.7, 0.7)

PARK_X = 5.0  # parked bodies live at x >= PARK_X, far outside the camera frustum


def slot_names(kind: str) -> list[str]:
    """Body names of the slots of one kind, e.g. ["block0", ..., "block4"]."""
    return [f"{kind}{i}" for i in range(SLOT_COUNTS[kind])]


def park_position(slot_index: int) -> tuple[float, float, float]:
    """Where the slot with global index `slot_index` waits when unused (1 m apart, off-camera)."""
    return (PARK_X + slot_index, 0.0, 0.5)


def _object_xml(kind: str, name: str, park: tuple[float, float, float]) -> str:
    pos = f"{park[0]} {park[1]} {park[2]}"
    # condim 4 adds torsional friction so a pinched block does not spin around the finger axis.
    common = 'condim="4" friction="1.0 0.01 0.001" solref="0.004 1"'
    if kind == "block":
        geom = f'<geom name="{name}" type="box" size="{BLOCK_HALF} {BLOCK_HALF} {BLOCK_HALF}" mass="0.06" {common}/>'
    elif kind == "cylinder":
        geom = (f'<geom name="{name}" type="cylinder" size="{CYLINDER_RADIUS} {CYLINDER_HALF_HEIGHT}" '
                f'mass="0.06" {common}/>')
    elif kind == "bar":
        geom = f'<geom name="{name}" type="box" size="{BAR_HALF[0]} {BAR_HALF[1]} {BAR_HALF[2]}" mass="0.08" {common}/>'
    elif kind == "plate":
        # Plates are mocap (kinematic) bodies: they are placed per episode and never move.
        return (f'<body name="{name}" mocap="true" pos="{pos}"><geom name="{name}" type="cylinder" '
                f'size="{PLATE_RADIUS} {PLATE_HALF_HEIGHT}" {common}/></body>')
    else:  # pragma: no cover - kinds come from SLOT_COUNTS
        raise ValueError(kind)
    return f'<body name="{name}" pos="{pos}"><freejoint name="{name}"/>{geom}</body>'


def build_mjcf(render_size: int) -> str:
    """MJCF of the tabletop scene whose offscreen buffer fits `render_size`x`render_size` frames."""
    objects = []
    slot_index = 0
    for kind in SLOT_COUNTS:
        for name in slot_names(kind):
            objects.append(_object_xml(kind, name, park_position(slot_index)))
            slot_index += 1
    fx, fy, fz = FINGER_HALF
    tr, tg, tb, ta = TABLE_RGBA
    ex, ey, ez = EE_START
    ld = " ".join(str(v) for v in LIGHT_DIR)
    lc = " ".join(str(v) for v in LIGHT_DIFFUSE)
    return f"""
<mujoco model="rlrc_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{PHYSICS_TIMESTEP}" integrator="implicitfast" cone="elliptic" impratio="10"/>
  <visual>
    <!-- Shadows and multisampling off: with them a CPU-rendered frame costs ~30x more. -->
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{render_size}" offheight="{render_size}"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.3 0.3 0.3" specular="0 0 0"/>
  </visual>
  <default>
    <geom rgba="0.8 0.8 0.8 1"/>
  </default>
  <worldbody>
    <light name="key" directional="true" pos="0 0 2" dir="{ld}" diffuse="{lc}" specular="0.1 0.1 0.1"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" rgba="0.35 0.37 0.4 1"/>
    <geom name="table" type="box" size="0.32 0.42 0.02" pos="0 0 -0.02" rgba="{tr} {tg} {tb} {ta}"
          friction="0.6 0.005 0.0001"/>
    <camera name="agentview" pos="{CAMERA_EYE[0]} {CAMERA_EYE[1]} {CAMERA_EYE[2]}" fovy="{CAMERA_FOVY}"
            xyaxes="0 -1 0 0.7 0 0.7"/>
    <body name="ee_target" mocap="true" pos="{ex} {ey} {ez}"/>
    <body name="hand" pos="{ex} {ey} {ez}" gravcomp="1">
      <joint name="hand" type="free" damping="0.5"/>
      <inertial pos="0 0 0.03" mass="0.4" diaginertia="0.0005 0.0005 0.0005"/>
      <site name="pinch" pos="0 0 0" size="0.004" rgba="1 0 0 0"/>
      <geom name="palm" type="box" size="0.022 0.055 0.008" pos="0 0 {fz + 0.008}" rgba="0.25 0.25 0.28 1"/>
      <geom name="wrist" type="cylinder" size="0.012 0.04" pos="0 0 {fz + 0.056}" rgba="0.25 0.25 0.28 1"
            contype="0" conaffinity="0"/>
      <body name="finger_left" pos="0 {fy} 0" gravcomp="1">
        <joint name="finger_left" type="slide" axis="0 1 0" range="0 {FINGER_MAX}" damping="2"/>
        <geom name="finger_left" type="box" size="{fx} {fy} {fz}" mass="0.05" condim="4"
              friction="1.5 0.02 0.001" rgba="0.15 0.15 0.17 1"/>
      </body>
      <body name="finger_right" pos="0 {-fy} 0" gravcomp="1">
        <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {FINGER_MAX}" damping="2"/>
        <geom name="finger_right" type="box" size="{fx} {fy} {fz}" mass="0.05" condim="4"
              friction="1.5 0.02 0.001" rgba="0.15 0.15 0.17 1"/>
      </body>
    </body>
    {''.join(objects)}
  </worldbody>
  <contact>
    <exclude body1="finger_left" body2="finger_right"/>
  </contact>
  <equality>
    <weld name="ee_weld" body1="ee_target" body2="hand" solref="0.01 1"/>
  </equality>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="400" kv="8" ctrlrange="0 {FINGER_MAX}" forcerange="-12 12"/>
    <position name="finger_right" joint="finger_right" kp="400" kv="8" ctrlrange="0 {FINGER_MAX}" forcerange="-12 12"/>
  </actuator>
</mujoco>
"""
