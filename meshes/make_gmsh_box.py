"""Write a periodic unstructured (gmsh) triangular mesh of the square box to a .msh file.

    python meshes/make_gmsh_box.py box.msh --L 98.8045 --size 6.6 [--seed 0]

Right/top boundary nodes are exact translates of the left/bottom ones (gmsh ``setPeriodic``),
as femplast.fe.mesh.gmsh_box requires. Generated meshes are not shipped: make them when needed.
"""

import argparse
import sys

from femplast.errors import FemplastInputError
from femplast.fe.mesh import L_DEFAULT, write_gmsh_box


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", help="path of the .msh file to write")
    parser.add_argument("--L", type=float, default=L_DEFAULT, help="box side (default %(default)s)")
    parser.add_argument("--size", type=float, default=6.6,
                        help="target cell size (default %(default)s, the paper's l)")
    parser.add_argument("--seed", type=int, default=0, help="gmsh Mesh.RandomSeed")
    args = parser.parse_args(argv)
    try:
        path = write_gmsh_box(args.output, args.L, args.size, args.seed)
    except FemplastInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
