"""Sample strategies. Each is named in a config as ``strategy = "module:Class"``:

* ``engine.strategies.ma_crossover:MovingAverageCrossover`` - trend following on the mid;
* ``engine.strategies.market_maker:MarketMaker`` - quotes both sides, skewed by inventory.
"""
from engine.strategies.ma_crossover import MovingAverageCrossover
from engine.strategies.market_maker import MarketMaker

__all__ = ["MovingAverageCrossover", "MarketMaker"]
