"""CO2 estimate model: energy × PUE × carbon intensity, always labelled as an estimate.

Nothing here measures emissions. The figure is only as good as the carbon intensity and
PUE it was given, which is why both are stored next to it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

JOULES_PER_KWH = 3.6e6


class CO2Estimate(BaseModel):
    """Estimated CO2-equivalent emissions of one measured energy figure.

    ``co2_g = energy_kwh × pue × carbon_intensity_gco2_kwh``. ``energy_kwh`` is the measured
    (IT) energy before PUE; ``facility_energy_kwh`` is it multiplied by the PUE.
    """

    model_config = ConfigDict(extra="forbid")

    co2_g: float = Field(ge=0.0, description="estimated grams of CO2-equivalent")
    energy_kwh: float = Field(ge=0.0, description="measured energy the estimate is based on")
    facility_energy_kwh: float = Field(ge=0.0, description="energy_kwh × pue")
    pue: float = Field(ge=1.0, description="power usage effectiveness of the site (>= 1)")
    carbon_intensity_gco2_kwh: float = Field(ge=0.0, description="grid intensity, gCO2e/kWh")
    method: Literal["estimate"] = "estimate"
    note: str = Field(
        default="energy × PUE × carbon intensity; carbon intensity and PUE are user inputs, not measured",
        description="how the figure was obtained and what it leaves out",
    )
