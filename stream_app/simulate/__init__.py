"""Traffic simulator: a deterministic CRM population model and sinks for files and Kafka."""

from stream_app.simulate.config import (
    DEFAULT_CAMPAIGNS,
    DEFAULT_REGIONS,
    DEFAULT_START,
    Behaviour,
    Campaign,
    Region,
    SimulationConfig,
)
from stream_app.simulate.faults import Emission
from stream_app.simulate.model import Simulation, generate, run_tag
from stream_app.simulate.scenarios import (
    SCENARIO_TYPES,
    ChurnSpike,
    ConversionCollapse,
    Scenario,
    TrafficSurge,
    parse_scenario,
    register_scenario,
)
from stream_app.simulate.stats import SimulationStats
from stream_app.simulate.volume import VolumePlan, plan_volume

__all__ = [
    "DEFAULT_CAMPAIGNS",
    "DEFAULT_REGIONS",
    "DEFAULT_START",
    "SCENARIO_TYPES",
    "Behaviour",
    "Campaign",
    "ChurnSpike",
    "ConversionCollapse",
    "Emission",
    "Region",
    "Scenario",
    "Simulation",
    "SimulationConfig",
    "SimulationStats",
    "TrafficSurge",
    "VolumePlan",
    "generate",
    "parse_scenario",
    "plan_volume",
    "register_scenario",
    "run_tag",
]
