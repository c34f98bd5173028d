import sys

from hf_contrastive.cli import main

sys.exit(main())
