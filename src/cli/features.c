/* kago features: what kago honours of the OCI runtime spec, as the runtime-spec features document. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "oci.h"

CLI_VERB(features)
{
    if (argc != 1)
        return cli_usage("features", "expected no argument");
    char *text = kago_oci_features();
    puts(text);
    free(text);
    return 0;
}
