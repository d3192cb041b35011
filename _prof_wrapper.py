import cProfile
import os
import runpy
import time

profiler = cProfile.Profile()
started = time.perf_counter()
profiler.enable()
try:
    runpy.run_path("/work/main/pages/prompt_tester.py", run_name="__main__")
finally:
    profiler.disable()
    if os.environ.get("PROF_OUT"):
        profiler.dump_stats(os.environ["PROF_OUT"])
        print("script", time.perf_counter() - started)
