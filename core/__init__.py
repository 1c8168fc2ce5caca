"""The ground floor: typed settings, log configuration, the base error and Redis value helpers.

Imports nothing of vidmem's; every other package may import it."""
