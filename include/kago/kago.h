/* kago — the engine library. */
#ifndef KAGO_H
#define KAGO_H
#include <kago/app.h>
#include <kago/checkpoint.h>
#include <kago/container.h>
#include <kago/error.h>
#include <kago/image.h>
#include <kago/spec.h>
#endif
