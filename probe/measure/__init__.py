"""One module per measurement kind; each exposes `async def measure(request, settings) -> Result`.

Network failures are returned as OONI failure strings inside the result, never raised.
"""
