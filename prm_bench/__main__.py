from prm_bench.cli import main

main()
