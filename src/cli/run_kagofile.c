/* kago run Kagofile: placeholder until the Kagofile front end lands. */
#include "cli.h"

CLI_VERB(run_kagofile)
{
    return cli_errorf("Kagofile %s: the Kagofile front end is not built in yet", argv[1]);
}
